// The released PAPO / GRPO / DAPO configurations (docs/objective.md, "Presets"), frozen. papoLoss starts from one of these
// (default 'papo-g') and applies the options the caller gives explicitly on top.
import type { PresetName } from './types';

export interface PresetValues {
  readonly clipLow: number;
  readonly clipHigh: number;
  readonly klCoef: number;
  readonly perceptionCoef: number;
  readonly entropyCoef: number;
  readonly maskedEntropyCoef: number;
}

function preset(clipLow: number, clipHigh: number, klCoef: number, perceptionCoef: number, entropy: number): PresetValues {
  return Object.freeze({ clipLow, clipHigh, klCoef, perceptionCoef, entropyCoef: entropy, maskedEntropyCoef: entropy });
}

export const presets: Readonly<Record<PresetName, PresetValues>> = Object.freeze({
  'papo-g': preset(0.2, 0.3, 0.01, 0.02, 0),
  'papo-g-7b': preset(0.2, 0.3, 0.01, 0.02, 0.05),
  'papo-d': preset(0.2, 0.28, 0, 0.01, 0.03),
  grpo: preset(0.2, 0.3, 0.01, 0, 0),
  dapo: preset(0.2, 0.28, 0, 0, 0),
});

export const defaultPreset: PresetName = 'papo-g';
