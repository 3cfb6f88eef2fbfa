export { startRedis, RedisServerError, type TestRedisServer, type StartRedisOptions } from './redis.ts';
export {
  projectionTest,
  ProjectionScenario,
  ProjectionTestTimeoutError,
  GivenEventDeadLetteredError,
  type TestEvent,
  type ExpectedSnapshots,
  type ProjectionTestOptions,
  type ScenarioOutcome,
} from './projection-test.ts';
