/** The part of autocannon 9's programmatic API the benchmarks use (the package ships no types). */
declare module 'autocannon' {
  export interface Histogram {
    average: number;
    mean: number;
    stddev: number;
    min: number;
    max: number;
    total: number;
    p50: number;
    p90: number;
    p99: number;
  }

  export interface Request {
    method?: string;
    path?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
  }

  export interface RequestStep extends Request {
    /** Returns the request to send (called before every request); `context` lives for one request here. */
    setupRequest?: (request: Request, context: Record<string, unknown>) => Request;
    onResponse?: (status: number, body: string, context: Record<string, unknown>) => void;
  }

  export interface Client {
    setBody(body: string | Buffer): void;
    setHeaders(headers: Record<string, string>): void;
  }

  export interface Options {
    url: string;
    connections?: number;
    /** Seconds. */
    duration?: number;
    method?: string;
    headers?: Record<string, string>;
    body?: string;
    requests?: RequestStep[];
    setupClient?: (client: Client) => void;
    /** A response whose body this refuses is counted in `mismatches`. */
    verifyBody?: (body: string) => boolean;
    /** Seconds. */
    timeout?: number;
    skipAggregateResult?: boolean;
  }

  export interface Result {
    latency: Histogram;
    requests: Histogram;
    duration: number;
    errors: number;
    timeouts: number;
    mismatches: number;
    non2xx: number;
    totalCompletedRequests?: number;
  }

  export interface Instance extends PromiseLike<Result> {
    stop(): void;
  }

  export interface Autocannon {
    (options: Options): Instance;
    aggregateResult(results: Result[], options: Partial<Options>): Result;
  }

  const autocannon: Autocannon;
  export default autocannon;
}
