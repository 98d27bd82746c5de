// What the lesson page says, in plain sentences for children and teachers:
// names of sources, every refusal code the gateway sends (with the action
// that was refused), every reason for leaving. One place, so that no
// developer wording ("not permitted (set engagement)") reaches a page.

export const LABEL = { microphone: 'Microphone', camera: 'Camera', screen_share: 'Screen share', annotate: 'Drawing on the board' };
const THING = { microphone: 'your microphone', camera: 'your camera', screen_share: 'screen sharing', annotate: 'drawing on the board' };

// The media connection's path (lesson-media.js `path()`), for the
// connection details: short, then the sentence behind it.
export const PATH = {
  'direct-udp': ['Direct (UDP)', 'Video and sound go straight to the lesson server over UDP: the best path.'],
  'direct-tcp': ['Direct (TCP)', 'Video and sound go straight to the lesson server over TCP.'],
  'turn-udp': ['Relayed (TURN over UDP)', 'Video and sound go through the relay server (TURN) over UDP.'],
  'turn-tcp': ['Relayed (TURN over TCP)', 'This network blocks direct connections: video and sound go through the relay server (TURN) over TCP.'],
  'turn-tls': ['Relayed (TURN over TLS)', 'This network blocks direct connections: video and sound go through the relay server (TURN) over TLS, like a secure web page.'],
};

// A refusal from the lesson, as a sentence. `action` is the refused
// message's wire name, when the gateway gave it.
export function refusal(code, action) {
  switch (code) {
    case 'not_permitted':
      if (action === 'set_source' || action === 'set_engagement') return 'Your teacher has not allowed that yet, so it stays off.';
      return 'Your teacher has not allowed that.';
    case 'not_admitted': return 'You are still in the waiting room: your teacher will let you in soon.';
    case 'forbidden': return 'Only staff can do that.';
    case 'pupil_to_pupil': return 'Private messages can only go to your teacher.';
    case 'public_chat_off': return 'Your teacher has paused the class chat.';
    case 'private_chat_off': return 'Your teacher has paused private messages.';
    case 'held': return 'The lesson is paused for a moment, so that cannot be sent now.';
    case 'rate_limited': return 'That was a lot of messages at once: wait a few seconds and try again.';
    case 'bad_text': return 'That message is empty, too long, or holds characters that change how text reads.';
    case 'locked': return 'The waiting room is closed: your teacher is not letting anyone new in.';
    case 'removed': return 'You were removed from this lesson.';
    case 'blocked': return 'Your access has been blocked. Speak to the school.';
    case 'unknown_participant': return 'That person is no longer in the lesson.';
    case 'invalid_state': return 'That has already happened.';
    case 'ended': return 'The lesson has ended.';
    case 'not_recording': return 'Pupils can be let in once the recording has started: it will start in a moment.';
    case 'not_found': return 'This lesson is not available to you.';
    case 'no_share': return 'Drawing needs a shared screen, and that screen is no longer shared.';
    case 'bad_mark': return 'That drawing is too large or off the shared screen.';
    case 'layer_full': return 'The shared screen is full of drawings: ask your teacher to clear them.';
    default: return 'That did not work. Please try again.';
  }
}

// Why the lesson said goodbye.
export function farewell(reason) {
  return {
    denied: 'Your teacher did not let you in to this lesson.',
    removed: 'You were removed from the lesson.',
    blocked: 'Your access has been blocked. Speak to the school.',
    ended: 'The lesson has ended.',
    replaced: 'You joined this lesson from another window, so this one has stopped.',
    access_ended: 'Your visitor access to this lesson has ended.',
  }[reason] || 'You have left the lesson.';
}

// A teacher changed one of my controls.
export function controlChanged(permission, granted, revoked) {
  const thing = THING[permission] || permission;
  if (granted) return `Your teacher allowed ${thing}.`;
  if (revoked) return `Your teacher switched off ${thing} and it stays off for now.`;
  return `Your teacher turned off ${thing}. You can turn it on again.`;
}

// Staff only: the lesson's time runs out at `at` (a clock time, "10:10"),
// when the server ends it for everyone unless they keep it open longer.
export function closing(at) {
  return `The lesson closes at ${at}: it will end then for everyone. To carry on, choose “Keep open 15 min longer”.`;
}

// Why pupils are held.
export function held(reason) {
  return reason === 'unsupervised' ? 'Paused: no teacher is here' : 'Paused: the recording stopped';
}
