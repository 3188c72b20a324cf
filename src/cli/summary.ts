/** A profile's human summary: components kept, bits per value, predicted ratio, energy captured. */
import type { CodecProfile } from '../codec/profile.js';

export function profileSummary(p: CodecProfile): string {
  const l = p.layout;
  const lines = [
    `profile ${p.fingerprint}`,
    `model shape: ${l.layers} layers x ${l.kvHeads} KV heads x ${l.headDim}, rope ${l.rope ? `${l.rope.style} (dims ${l.rope.dims ?? l.headDim})` : 'none'}; calibrated on ${p.settings.calibrationTokens} tokens (${l.dtype})`,
    `settings: ratio ${p.settings.ratio}, PCA groups of ${p.settings.pcaGroupLayers} layer(s), ${p.settings.sinkTokens} sink + ${p.settings.windowTokens} window tokens lossless`,
    '',
    '| stream | layers | features | components kept | bits/value | predicted ratio | energy captured | plan |',
    '|---|---|---|---|---|---|---|---|',
  ];
  let bits = 0;
  let feats = 0;
  for (const g of p.groups) {
    let kept = 0;
    for (let i = 0; i < g.components; i++) kept += g.eigenvalues[i]!;
    const bpv = g.bitsPerToken / g.features;
    bits += g.bitsPerToken;
    feats += g.features;
    const plan = g.plan.map((x) => `${x.size}x${x.bits}b`).join(' ');
    lines.push(
      `| ${g.stream} | ${g.layerStart}..${g.layerStart + g.layerCount - 1} | ${g.features} | ${g.components} | ${bpv.toFixed(3)} | ${(16 / bpv).toFixed(1)}x | ${g.totalEnergy > 0 ? ((100 * kept) / g.totalEnergy).toFixed(1) : '-'}% | ${plan.length > 60 ? `${plan.slice(0, 57)}...` : plan} |`,
    );
  }
  lines.push('', `overall: ${(bits / feats).toFixed(3)} bits/value before entropy coding, predicted ${(16 / (bits / feats)).toFixed(1)}x on coded tokens; profile ${(p.byteLength / 1e6).toFixed(2)} MB`);
  return lines.join('\n');
}
