// What the lesson page says for every refusal code and every farewell the
// gateway sends (`gateway/static/lesson-words.js`), checked for plain
// wording: a sentence, no wire names, no codes in brackets (issue 19 found
// "Refused: not permitted (set engagement)" on a pupil's page).
//
//   CODES=not_found,forbidden,... FAREWELLS=denied,... node words-check.mjs
//
// Prints one JSON line: {defaults: codes that get the generic sentence,
// bad: ["code: sentence", ...]}.
import { farewell, refusal } from '../../gateway/static/lesson-words.js';

const list = name => (process.env[name] || '').split(',').filter(Boolean);
const generic = refusal('no such code, ever');
const plain = s => typeof s === 'string' && /^[A-Z]/.test(s) && /[.!]$/.test(s) && !/[_(){}]|\bnull\b|\bundefined\b/.test(s);
const bad = [];
const defaults = [];
for (const code of list('CODES')) {
  for (const action of [undefined, 'set_source', 'set_engagement', 'chat', 'raise_hand']) {
    const s = refusal(code, action);
    if (!plain(s)) bad.push(`${code}/${action}: ${s}`);
  }
  if (refusal(code) === generic) defaults.push(code);
}
const leaving = farewell('no such reason, ever');
for (const reason of list('FAREWELLS')) {
  const s = farewell(reason);
  if (!plain(s) || s === leaving) bad.push(`farewell ${reason}: ${s}`);
}
console.log(JSON.stringify({ defaults, bad }));
