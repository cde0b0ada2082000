// Run the original TF.js MobileFaceNet graph (pure-JS @tensorflow/tfjs, CPU backend) on raw inputs.
//
// usage: node verify_mobilefacenet_tfjs.mjs MODEL.json INPUT.f32 N OUTPUT.f32
//   INPUT.f32: N x 112 x 112 x 3 float32 little-endian, already scaled as the graph expects
//   OUTPUT.f32: N x D float32 embeddings (the graph's output node)
// Run it from a folder where `npm install @tensorflow/tfjs` was done (NODE_PATH also works).
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(path.join(process.cwd(), 'noop.js'));
const tf = require('@tensorflow/tfjs');

function fileHandler(jsonPath) {
  return {
    load: async () => {
      const doc = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
      const specs = [];
      const buffers = [];
      for (const group of doc.weightsManifest) {
        specs.push(...group.weights);
        for (const p of group.paths) buffers.push(fs.readFileSync(path.join(path.dirname(jsonPath), p)));
      }
      const all = Buffer.concat(buffers);
      const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
      return {
        modelTopology: doc.modelTopology, format: doc.format, generatedBy: doc.generatedBy,
        convertedBy: doc.convertedBy, userDefinedMetadata: doc.userDefinedMetadata,
        weightSpecs: specs, weightData,
      };
    },
  };
}

const [jsonPath, inputPath, nStr, outPath] = process.argv.slice(2);
if (!outPath) {
  console.error('usage: node verify_mobilefacenet_tfjs.mjs MODEL.json INPUT.f32 N OUTPUT.f32');
  process.exit(2);
}
await tf.setBackend('cpu');
const model = await tf.loadGraphModel(fileHandler(jsonPath));
const n = Number(nStr);
const raw = fs.readFileSync(inputPath);
const data = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
if (data.length !== n * 112 * 112 * 3) {
  console.error(`input holds ${data.length} floats, expected ${n * 112 * 112 * 3}`);
  process.exit(2);
}
const x = tf.tensor4d(data, [n, 112, 112, 3]);
const y = model.execute(x);
const out = await y.data();
fs.writeFileSync(outPath, Buffer.from(out.buffer, out.byteOffset, out.byteLength));
console.log(`tfjs ${tf.version.tfjs} backend ${tf.getBackend()}: ${n} inputs -> output shape [${y.shape}]`);
