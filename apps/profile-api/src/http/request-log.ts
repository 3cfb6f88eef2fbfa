import { LogController, type FastifyReply, type FastifyRequest } from 'fastify';

/**
 * Routes polled by machines and open pages (the dashboard's status every second per page, Prometheus
 * scrapes, health probes): their request lines are debug, or they drown the log. Failures (5xx) stay
 * at their usual level.
 */
export const QUIET_ROUTES: ReadonlySet<string> = new Set([
  '/dashboard',
  '/dashboard/',
  '/dashboard/app.js',
  '/dashboard/app.css',
  '/dashboard/status.json',
  '/metrics',
  '/healthz',
  '/readyz',
]);

const isQuiet = (request: FastifyRequest) => QUIET_ROUTES.has(request.routeOptions.url ?? '');

/** Fastify's request lines ("incoming request", "request completed"), at debug for the quiet routes. */
export class RequestLogController extends LogController {
  override incomingRequest(request: FastifyRequest, reply: FastifyReply): void {
    if (!isQuiet(request)) return super.incomingRequest(request, reply);
    if (!this.isLogDisabled(request)) request.log.debug({ req: request }, 'incoming request');
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (error || reply.statusCode >= 500 || !isQuiet(request)) return super.requestCompleted(error, request, reply);
    if (!this.isLogDisabled(request))
      reply.log.debug({ res: reply, responseTime: reply.elapsedTime }, 'request completed');
  }
}
