/**
 * Imported first by the CLI: libuv's thread pool (4 threads by default) runs
 * both the spool's fsyncs and DKIM signatures; 8 keeps signing bursts from
 * queueing commits behind them. Must be set before the pool's first use.
 */
process.env.UV_THREADPOOL_SIZE ??= '8';
export {};
