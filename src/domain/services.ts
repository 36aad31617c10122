import { ApiTokenService } from './api-tokens.js';
import { ChannelInboundService } from './channel-inbound.js';
import { ChannelService } from './channels.js';
import type { ServiceContext } from './context.js';
import { DeliveryService } from './delivery.js';
import { EnvService } from './env.js';
import { EventLogService } from './event-log.js';
import { LeaseService } from './leases.js';
import { MessageService } from './messages.js';
import { QuestionService } from './questions.js';
import { SandboxWaitService } from './sandbox-waits.js';
import { SandboxService } from './sandboxes.js';
import { SubscriptionService } from './subscriptions.js';
import { TenantService } from './tenants.js';
import { WorkerService } from './workers.js';

/** The services of one request, sharing its EntityManager fork and caller. */
export interface Services {
  context: ServiceContext;
  tenants: TenantService;
  workers: WorkerService;
  sandboxes: SandboxService;
  sandboxWaits: SandboxWaitService;
  leases: LeaseService;
  messages: MessageService;
  questions: QuestionService;
  deliveries: DeliveryService;
  events: EventLogService;
  apiTokens: ApiTokenService;
  env: EnvService;
  subscriptions: SubscriptionService;
  channels: ChannelService;
  channelInbound: ChannelInboundService;
}

export function createServices(context: ServiceContext): Services {
  return {
    context,
    tenants: new TenantService(context),
    workers: new WorkerService(context),
    sandboxes: new SandboxService(context),
    sandboxWaits: new SandboxWaitService(context),
    leases: new LeaseService(context),
    messages: new MessageService(context),
    questions: new QuestionService(context),
    deliveries: new DeliveryService(context),
    events: new EventLogService(context),
    apiTokens: new ApiTokenService(context),
    env: new EnvService(context),
    subscriptions: new SubscriptionService(context),
    channels: new ChannelService(context),
    channelInbound: new ChannelInboundService(context),
  };
}
