// Type-level checks of defineProjection: `pnpm typecheck` compiles this file, so an inference that
// regresses or a `@ts-expect-error` that stops erring fails the check; vitest runs the runtime part.
import { describe, expect, expectTypeOf, it } from 'vitest';
import { z } from 'zod';
import { EventCatalog, UnknownStreamError } from '@redsource/event-store';
import { defineProjection, InvalidProjectionError } from '@redsource/processor';

const placed = z.object({ orderId: z.string(), total: z.number() });
const cancelled = z.object({ orderId: z.string(), why: z.string().optional() });
const note = z.object({ orderId: z.string(), text: z.string() });
const catalog = new EventCatalog({
  orders: { stream: 'orders_v2', schemas: { placed, cancelled } },
  notes: { stream: 'notes:*', schemas: { '*': note } },
});

describe('defineProjection types', () => {
  it("infers each handler's event from the catalog schema for its stream and type", () => {
    const projection = defineProjection({
      name: 'orders',
      catalog,
      keyPrefix: 'order_',
      handlers: {
        orders: {
          placed: (event) => {
            expectTypeOf(event.type).toEqualTypeOf<'placed'>();
            expectTypeOf(event.data).toEqualTypeOf<{ orderId: string; total: number }>();
            return { snapshotId: event.data.orderId, mutations: [{ op: 'create' }] };
          },
          cancelled: ({ data }) => {
            expectTypeOf(data).toEqualTypeOf<{ orderId: string; why?: string | undefined }>();
            return undefined;
          },
        },
        notes: {
          '*': (event) => {
            expectTypeOf(event.type).toEqualTypeOf<string>();
            expectTypeOf(event.data.text).toEqualTypeOf<string>();
            return [];
          },
        },
      },
    });
    // Registered under the streams' names in Redis, written once in the catalog.
    expect(projection.streams).toEqual(['orders_v2']);
    expect(projection.streamPrefixes).toEqual(['notes:']);
  });

  it('does not compile a type, stream or field the catalog lacks (and refuses them at run time too)', () => {
    const typo = () =>
      defineProjection({
        name: 'typos',
        catalog,
        keyPrefix: 'typo_',
        handlers: {
          orders: {
            // @ts-expect-error 'plcaed' is not an event type of the orders stream
            plcaed: () => undefined,
          },
        },
      });
    expect(typo).toThrow(InvalidProjectionError);
    defineProjection({
      name: 'fields',
      catalog,
      keyPrefix: 'field_',
      handlers: {
        orders: {
          placed: ({ data }) => ({
            snapshotId: data.orderId,
            // @ts-expect-error 'amount' is not a field of placed's data
            mutations: [{ op: 'setFields', fields: { amount: data.amount } }],
          }),
        },
      },
    });
    const wrongStream = () =>
      defineProjection({
        name: 'streams',
        catalog,
        keyPrefix: 'stream_',
        // @ts-expect-error 'order' is not a key of the catalog
        handlers: { order: { placed: () => undefined } },
      });
    expect(wrongStream).toThrow(UnknownStreamError);
  });

  it('refuses a name that cannot be part of a key', () => {
    expect(() =>
      defineProjection({ name: 'a{b}', catalog, keyPrefix: 'x_', handlers: { orders: { placed: () => undefined } } }),
    ).toThrow(InvalidProjectionError);
  });
});
