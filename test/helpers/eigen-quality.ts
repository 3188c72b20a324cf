/** How well an eigen-decomposition satisfies its contract (the eigensolver's tests and its benchmark). */
export interface EigenQuality {
  residual: number; // max_i |A v_i - l_i v_i| / max |l|
  ortho: number; // max |V V^T - I|
  sorted: boolean;
  signOk: boolean;
}

export function eigenQuality(a: Float64Array, n: number, values: Float64Array, vectors: Float64Array): EigenQuality {
  const scale = Math.max(...Array.from(values, Math.abs), Number.MIN_VALUE);
  let residual = 0;
  let ortho = 0;
  let signOk = true;
  for (let i = 0; i < n; i++) {
    const v = vectors.subarray(i * n, (i + 1) * n);
    let r2 = 0;
    for (let row = 0; row < n; row++) {
      let s = 0;
      const o = row * n;
      for (let k = 0; k < n; k++) s += a[o + k]! * v[k]!;
      r2 += (s - values[i]! * v[row]!) ** 2;
    }
    residual = Math.max(residual, Math.sqrt(r2) / scale);
    for (let j = 0; j <= i; j++) {
      const w = vectors.subarray(j * n, (j + 1) * n);
      let d = 0;
      for (let k = 0; k < n; k++) d += v[k]! * w[k]!;
      ortho = Math.max(ortho, Math.abs(d - (i === j ? 1 : 0)));
    }
    let arg = 0;
    for (let k = 1; k < n; k++) if (Math.abs(v[k]!) > Math.abs(v[arg]!)) arg = k;
    if (!(v[arg]! > 0)) signOk = false;
  }
  let sorted = true;
  for (let i = 1; i < n; i++) if (!(values[i - 1]! >= values[i]!)) sorted = false;
  return { residual, ortho, sorted, signOk };
}
