/**
 * The Postfix services of one process (the `postfix:` config section):
 * the policy delegation service and the milter, on the policy hooks, the
 * DKIM signer and the state store the native listeners use.
 */
import type { PostfixDeps } from './context';
import { Milter } from './milter/server';
import { PolicyService } from './policy-service';

export class PostfixServices {
  readonly policyService: PolicyService | undefined;
  readonly milter: Milter | undefined;

  constructor(private readonly deps: PostfixDeps) {
    this.policyService = deps.cfg.policyService ? new PolicyService(deps) : undefined;
    this.milter = deps.cfg.milter ? new Milter(deps) : undefined;
  }

  async start(): Promise<void> {
    if (this.policyService && this.deps.cfg.policyService) await this.policyService.listen(this.deps.cfg.policyService);
    if (this.milter && this.deps.cfg.milter) await this.milter.listen(this.deps.cfg.milter);
  }

  async stop(): Promise<void> {
    await this.policyService?.close();
    await this.milter?.close();
  }
}
