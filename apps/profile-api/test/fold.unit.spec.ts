import { describe, expect, it } from 'vitest';
import { EventCodec, type RecordedEvent } from '@redsource/event-store';
import { profileCatalog } from '../src/domain/events.ts';
import { foldLog, stateToProfile } from '../src/domain/fold.ts';

const codec = new EventCodec(profileCatalog());
let seq = 0;
/** Decodes a flat entry the way the processor would, so the fold sees exactly what Redis gives it. */
const entry = (stream: string, ...fields: string[]): RecordedEvent => codec.decode(stream, `1-${seq++}`, fields);

/** given(events).then(userId, expected profile or undefined) */
const given = (...events: RecordedEvent[]) => ({
  then(userId: string, expected: unknown) {
    const state = foldLog(events).get(userId);
    expect(state ? stateToProfile(userId, state) : undefined).toEqual(expected);
  },
});

describe('the profile fold', () => {
  it("folds the seed document's five events into Duffy Duck with his activity", () => {
    given(
      entry('user_updates', 'user_id', '1', 'command', 'register', 'name', 'Duffy', 'surename', 'Duck'),
      entry('user_updates', 'user_id', '2', 'command', 'register', 'name', 'Bugs', 'surename', 'Bunny'),
      entry('user_activity', 'user_id', '1', 'command', 'kick', 'object', 'Bugs'),
      entry('user_activity', 'user_id', '1', 'command', 'dislike', 'object', 'Bugs face'),
      entry('user_friends', 'user_id', '1', 'command', 'remove', 'friend_id', '2'),
    ).then('1', {
      id: '1',
      name: 'Duffy',
      surname: 'Duck',
      friends: [],
      likedPages: [],
      activity: { kick: 1, dislike: 1 },
    });
  });

  it('keeps what arrived before the registration, and a re-registration replaces only the personal fields', () => {
    given(
      entry('user_friends', 'user_id', '7', 'command', 'add', 'friend_id', '8'),
      entry('user_updates', 'user_id', '7', 'command', 'register', 'name', 'A', 'city', 'Oslo'),
      entry('user_activity', 'user_id', '7', 'action', 'like', 'page', 'p1'),
      entry('user_updates', 'user_id', '7', 'command', 'register', 'name', 'B'),
    ).then('7', { id: '7', name: 'B', friends: ['8'], likedPages: ['p1'], activity: { like: 1 } });
  });

  it('hides a deleted user until registered again', () => {
    const events = [
      entry('user_updates', 'user_id', '3', 'command', 'register', 'name', 'C'),
      entry('user_updates', 'user_id', '3', 'command', 'delete'),
    ];
    given(...events).then('3', undefined);
    given(...events, entry('user_updates', 'user_id', '3', 'command', 'register', 'name', 'D')).then('3', {
      id: '3',
      name: 'D',
      friends: [],
      likedPages: [],
      activity: {},
    });
  });

  it('applies like/unlike and add/remove in order, and counts every activity', () => {
    given(
      entry('user_updates', 'user_id', '4', 'command', 'register', 'name', 'E'),
      entry('user_activity', 'user_id', '4', 'command', 'like', 'object', 'p1'),
      entry('user_activity', 'user_id', '4', 'command', 'like', 'object', 'p2'),
      entry('user_activity', 'user_id', '4', 'command', 'unlike', 'object', 'p1'),
      entry('user_activity', 'user_id', '4', 'command', 'like', 'object', 'p1'),
      entry('user_friends', 'user_id', '4', 'command', 'add', 'friend_id', '5'),
      entry('user_friends', 'user_id', '4', 'command', 'remove', 'friend_id', '5'),
    ).then('4', { id: '4', name: 'E', friends: [], likedPages: ['p2', 'p1'], activity: { like: 3, unlike: 1 } });
  });
});
