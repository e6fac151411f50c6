// The synthetic task: "how many squares?" over a 28x28 gray image holding 1 to 4 bright 4x4 squares on noise. The
// question never changes, so only the image tells the answer: a policy blind to it gets 1 in 4 right at best.
// A response is RESPONSE_LEN tokens, `<a> digit </a>` when well formed; the reward is 0.9·accuracy + 0.1·format.
import type { Image } from '../../lib';
import type { Random } from '../../lib/random';

export const SIZE = 28;
export const MAX_COUNT = 4;
const SQUARE = 4;

/** 16 tokens: the answer tags, the digits, and filler words a young policy also emits. */
export const VOCAB = ['<a>', '</a>', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'the', 'is', 'a', '.'];
export const OPEN = 0, CLOSE = 1, DIGIT0 = 2;
export const RESPONSE_LEN = 3;

export interface Sample {
  image: Image;
  count: number;
}

/** An image with `count` non-touching squares at random places (8-bit HWC, one channel, as decoded images are). */
export function makeSample(random: Random): Sample {
  const count = 1 + Math.floor(random() * MAX_COUNT);
  const data = new Uint8Array(SIZE * SIZE);
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(random() * 40);
  const placed: Array<[number, number]> = [];
  while (placed.length < count) {
    const x = Math.floor(random() * (SIZE - SQUARE + 1)), y = Math.floor(random() * (SIZE - SQUARE + 1));
    // a gap of at least one pixel, so that squares never merge into one blob
    if (placed.some(([px, py]) => Math.abs(px - x) <= SQUARE && Math.abs(py - y) <= SQUARE)) continue;
    placed.push([x, y]);
    const level = 200 + Math.floor(random() * 56);
    for (let dy = 0; dy < SQUARE; dy++) data.fill(level, (y + dy) * SIZE + x, (y + dy) * SIZE + x + SQUARE);
  }
  return { image: { data, width: SIZE, height: SIZE, channels: 1 }, count };
}

export interface Score {
  reward: number;
  accuracy: number;
  format: number;
}

/** The answer is the response's first digit; the format is `<a> … </a>` around it. */
export function score(response: ArrayLike<number>, count: number): Score {
  const format = response[0] === OPEN && response[RESPONSE_LEN - 1] === CLOSE ? 1 : 0;
  let answer = -1;
  for (let t = 0; t < RESPONSE_LEN && answer < 0; t++) if (response[t] >= DIGIT0 && response[t] < DIGIT0 + 10) answer = response[t] - DIGIT0;
  const accuracy = answer === count ? 1 : 0;
  return { reward: 0.9 * accuracy + 0.1 * format, accuracy, format };
}
