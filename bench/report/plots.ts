/**
 * Benchmark plots, rendered offline to SVG with Vega-Lite + Vega (no browser, no canvas).
 */
import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

/** Renders a Vega-Lite spec to an SVG string. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

export interface RdPoint {
  method: string;
  ratio: number;
  /** Error measure on the y axis (relative MSE, or next-token KL). */
  value: number;
  stream?: string;
}

/** Ratio (log x) against an error measure (log y), one line per method, one panel per stream. */
export function rateDistortionSpec(points: RdPoint[], yTitle: string, title: string): TopLevelSpec {
  const encoding = {
    x: { field: 'ratio', type: 'quantitative', scale: { type: 'log' }, title: 'compression ratio vs fp16' },
    y: { field: 'value', type: 'quantitative', scale: { type: 'log' }, title: yTitle },
    color: { field: 'method', type: 'nominal', title: null },
    tooltip: [{ field: 'method' }, { field: 'ratio', format: '.2f' }, { field: 'value', format: '.2e' }],
  };
  const layer = {
    data: { values: points },
    mark: { type: 'line', point: { size: 60, filled: true }, strokeWidth: 1.5 },
    encoding,
  };
  const hasStreams = points.some((p) => p.stream);
  return (hasStreams
    ? { $schema: 'https://vega.github.io/schema/vega-lite/v5.json', title, ...layer, facet: undefined, encoding: { ...encoding, column: { field: 'stream', type: 'nominal', title: null } }, width: 300, height: 240 }
    : { $schema: 'https://vega.github.io/schema/vega-lite/v5.json', title, ...layer, width: 420, height: 280 }) as unknown as TopLevelSpec;
}

export interface ThroughputBar {
  method: string;
  direction: 'encode' | 'decode';
  mbPerSecond: number;
}

/** Grouped bars of MB/s (log scale) per method, encode and decode side by side. */
export function throughputSpec(bars: ThroughputBar[], title: string): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    data: { values: bars },
    mark: 'bar',
    encoding: {
      y: { field: 'method', type: 'nominal', title: null, sort: null, axis: { labelLimit: 320 } },
      yOffset: { field: 'direction' },
      x: { field: 'mbPerSecond', type: 'quantitative', scale: { type: 'log', domainMin: 1 }, title: 'MB/s of KV per core (log)' },
      // Bars on a log axis need an explicit base (0 has no place on it).
      x2: { datum: 1 },
      color: { field: 'direction', type: 'nominal', title: null },
      tooltip: [{ field: 'method' }, { field: 'direction' }, { field: 'mbPerSecond', format: '.1f' }],
    },
    width: 420,
    height: { step: 14 },
  } as unknown as TopLevelSpec;
}

/** Rasterizes an SVG to PNG (resvg: prebuilt, no system libraries), for places that show no SVG. */
export function svgToPng(svg: string, width = 900): Uint8Array {
  const png = new Resvg(svg, { fitTo: { mode: 'width', value: width }, background: 'white', font: { loadSystemFonts: true } }).render().asPng();
  return new Uint8Array(png);
}
