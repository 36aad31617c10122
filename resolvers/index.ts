// Assembles the schema: every domain file registers its types on the one builder.
import { builder } from './builder.js';
import './member.js';
import './tenant.js';
import './api-token.js';
import './viewer.js';
import './worker.js';
import './sandbox.js';
import './env.js';
import './lease.js';
import './message.js';
import './question.js';
import './channel.js';
import './event.js';
import { declareFederationFieldScopes, guardEntities } from './federation.js';
import { limitStringInputs } from './input-lengths.js';

export const schema = declareFederationFieldScopes(
  builder.toSubGraphSchema({
    linkUrl: 'https://specs.apollo.dev/federation/v2.6',
    federationDirectives: ['@key', '@shareable', '@external'],
  }),
);
guardEntities(schema);
limitStringInputs(schema);
