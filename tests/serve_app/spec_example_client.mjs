// The request logic of the spec's TypeScript examples (§7.2, `removeBackground` and the
// `useBackgroundRemoval` hook) for Node ≥ 20, whose fetch, FormData, File and Blob are the
// browser's (undici). Changes: the React state setters became a returned object, and the relative
// URL got the test server's origin (a page would be served from it). Types dropped: plain JS.
//
//   node spec_example_client.mjs <base url> <image path> <content type>
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';

async function removeBackground(base, file) {
  // Send to API
  const formData = new FormData();
  formData.append('image', file);
  formData.append('smoothing', 'true');

  const response = await fetch(`${base}/api/background-removal/remove`, {
    method: 'POST',
    body: formData,
  });

  if (!response.ok) {
    const errorData = await response.json();
    throw new Error(errorData.detail || 'Background removal failed');
  }

  // Get metadata from headers
  const processingTime = response.headers.get('X-Processing-Time-Ms');
  const originalSize = response.headers.get('X-Original-Size');
  const modelVersion = response.headers.get('X-Model-Version');
  const info = {
    original_size: originalSize || 'unknown',
    processing_time_ms: parseFloat(processingTime || '0'),
    model_version: modelVersion || 'unknown',
  };

  // Display result
  const blob = await response.blob();
  const signature = Buffer.from(await blob.slice(0, 8).arrayBuffer()).toString('hex');
  return { info, blob_type: blob.type, blob_size: blob.size, signature };
}

const [base, path, type] = process.argv.slice(2);
const file = new File([await readFile(path)], basename(path), { type });
try {
  console.log(JSON.stringify({ ok: true, ...(await removeBackground(base, file)) }));
} catch (err) {
  console.log(JSON.stringify({ ok: false, error: err instanceof Error ? err.message : 'Unknown error' }));
}
