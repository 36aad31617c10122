import { TenantsDocument } from '../../../src/client/index.js';
import { h } from '../dom.js';
import { cpu, memory } from '../format.js';
import { session } from '../session.js';

/** The tenants the viewer can see, with what each reserves against its quota. */
export async function tenantsView(root: HTMLElement): Promise<void> {
  root.replaceChildren(h('p', { class: 'muted' }, 'Loading tenants…'));
  const result = await session.api().query(TenantsDocument, { first: 100 });
  if (!result.ok) {
    root.replaceChildren(h('p', { class: 'error', role: 'alert' }, result.error.message));
    return;
  }
  const tenants = result.data.tenants.edges.map((e) => e.node);
  root.replaceChildren(
    h('h1', {}, 'Tenants'),
    tenants.length === 0
      ? h('p', { class: 'muted' }, 'No tenants yet. Create one in GraphiQL with the createTenant mutation.')
      : h(
          'ul',
          { class: 'grid', 'aria-label': 'Tenants' },
          tenants.map((t) =>
            h(
              'li',
              { class: 'card tenant-card' },
              h(
                'a',
                { href: `#/t/${encodeURIComponent(t.id)}`, class: 'tenant-link' },
                h('strong', {}, t.name),
                h('span', { class: 'muted' }, ` ${t.slug}`),
              ),
              h(
                'dl',
                { class: 'stats' },
                h('dt', {}, 'Sandboxes'),
                h('dd', {}, `${t.usage.sandboxes} / ${t.quota.maxSandboxes}`),
                h('dt', {}, 'CPU'),
                h('dd', {}, `${cpu(t.usage.cpuMillis)} / ${cpu(t.quota.maxCpuMillis)}`),
                h('dt', {}, 'Memory'),
                h('dd', {}, `${memory(t.usage.memoryMb)} / ${memory(t.quota.maxMemoryMb)}`),
              ),
            ),
          ),
        ),
  );
}
