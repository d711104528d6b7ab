// Tensors as the Python side sends them: {"dtype", "shape", "data": base64 little-endian} or
// plain nested arrays (null read as NaN, since JSON has no NaN).

export interface EncodedTensor {
  dtype: string;
  shape: number[];
  data: string | ArrayLike<number | null>;
}
export type NestedArray = Array<number | null | NestedArray>;
export type TensorLike = EncodedTensor | NestedArray | { shape: number[]; values: Float32Array };

export interface Tensor {
  shape: number[];
  values: Float32Array;
}

const WIDTH: Record<string, number> = { float32: 4, float64: 8, int32: 4, float16: 2, uint8: 1 };

function fromBase64(b64: string): Uint8Array {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function half(bits: number): number {
  const s = bits & 0x8000 ? -1 : 1;
  const e = (bits >> 10) & 0x1f;
  const f = bits & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

function product(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function checkShape(shape: unknown): number[] {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new Error(`mechscope.decodeTensor: shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  return shape as number[];
}

function decodeBytes(bytes: Uint8Array, dtype: string, n: number): Float32Array {
  const width = WIDTH[dtype];
  if (!width) {
    throw new Error(`mechscope.decodeTensor: dtype ${JSON.stringify(dtype)} is not one of ${Object.keys(WIDTH).join(", ")}`);
  }
  if (bytes.length !== n * width) {
    throw new Error(`mechscope.decodeTensor: ${bytes.length} bytes of ${dtype} do not fill shape with ${n} values`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    if (dtype === "float32") out[i] = view.getFloat32(4 * i, true);
    else if (dtype === "float64") out[i] = view.getFloat64(8 * i, true);
    else if (dtype === "int32") out[i] = view.getInt32(4 * i, true);
    else if (dtype === "float16") out[i] = half(view.getUint16(2 * i, true));
    else out[i] = bytes[i];
  }
  return out;
}

function flatten(a: NestedArray): Tensor {
  const shape: number[] = [];
  let cur: unknown = a;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    cur = cur[0];
  }
  const n = product(shape);
  const out = new Float32Array(n);
  let k = 0;
  const walk = (x: unknown, depth: number): void => {
    if (depth === shape.length) {
      if (x !== null && typeof x !== "number") throw new Error(`mechscope.decodeTensor: ${JSON.stringify(x)} is not a number`);
      out[k++] = x === null ? NaN : x;
      return;
    }
    if (!Array.isArray(x) || x.length !== shape[depth]) {
      throw new Error(`mechscope.decodeTensor: ragged nested array (axis ${depth} should have length ${shape[depth]})`);
    }
    for (const y of x) walk(y, depth + 1);
  };
  walk(a, 0);
  return { shape, values: out };
}

/** Decodes a tensor sent as base64 little-endian bytes or as nested arrays into {shape, values}. */
export function decodeTensor(t: TensorLike): Tensor {
  if (Array.isArray(t)) return flatten(t);
  if (!t || typeof t !== "object" || !("shape" in t)) {
    throw new Error("mechscope.decodeTensor: expected {dtype, shape, data} or nested arrays");
  }
  const shape = checkShape(t.shape);
  const n = product(shape);
  if ("values" in t && t.values instanceof Float32Array) {
    if (t.values.length !== n) throw new Error(`mechscope.decodeTensor: ${t.values.length} values for shape [${shape}]`);
    return { shape, values: t.values };
  }
  const e = t as EncodedTensor;
  if (typeof e.data === "string") return { shape, values: decodeBytes(fromBase64(e.data), e.dtype ?? "float32", n) };
  if (e.data && typeof e.data.length === "number") {
    if (e.data.length !== n) throw new Error(`mechscope.decodeTensor: ${e.data.length} values for shape [${shape}]`);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = e.data[i] === null ? NaN : (e.data[i] as number);
    return { shape, values: out };
  }
  throw new Error("mechscope.decodeTensor: data must be a base64 string or a flat list of numbers");
}
