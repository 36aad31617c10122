import { ApiTokenService } from './api-tokens.js';
import type { ServiceContext } from './context.js';
import { TenantService } from './tenants.js';

/** The services of one request, sharing its EntityManager fork and caller. */
export interface Services {
  context: ServiceContext;
  tenants: TenantService;
  apiTokens: ApiTokenService;
}

export function createServices(context: ServiceContext): Services {
  return {
    context,
    tenants: new TenantService(context),
    apiTokens: new ApiTokenService(context),
  };
}
