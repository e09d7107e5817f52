"""Whole-scene prediction benchmark: `predict_scene` (tiles) against one whole-image forward pass.

A 1500x1500 and a 6000x6000 generated scene (PNG) are predicted by a road U-Net (ResNet34 encoder; weights random:
time and memory do not depend on them) at the training scale of the reference workflow (1500 -> 512, so 6000 -> 2048
model pixels). Every run is a fresh process, so its peak RSS (VmHWM, the model included) is its own; the runs
alternate tiled/whole and the median time is reported. Targets: peak RSS <= 1.5 GB whatever the scene size; tiled
time <= 1.1x the whole-image pass at overlap 0.

    python bench/predict.py [--sizes 1500 6000] [--rounds 2] [--bs 8] [--tile 128]
"""
import argparse, json, statistics, subprocess, sys, tempfile, warnings
from pathlib import Path

CHILD = r'''
import json, re, sys, time, warnings
warnings.filterwarnings('ignore')
from fastai.learner import load_learner
from unet_fastai.predict import predict_scene
import numpy as np
model, scene, tile, overlap, bs, scale = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
def hwm_mb():  # peak RSS of this address space (ru_maxrss would include the parent's peak: Linux keeps it across exec)
    return int(re.search(r'VmHWM:\s+(\d+) kB', open('/proc/self/status').read())[1]) / 1024
learn = load_learner(model)
predict_scene(learn, np.zeros((64, 64, 3), np.uint8), tile=0, scale=1)  # warm up
base = hwm_mb()
t = time.perf_counter()
mask, probs = predict_scene(learn, scene, tile=tile, overlap=overlap, bs=bs, scale=scale)
dt = time.perf_counter() - t
print(json.dumps(dict(s=dt, peak_mb=hwm_mb(), base_mb=base, shape=mask.shape)))
'''

def make_model(root):
    from unet_fastai.synthetic import write_scenes
    from unet_fastai.prepare import prepare
    from unet_fastai.data import roads_dls
    from unet_fastai.train import seg_learner
    write_scenes(root/'s', n=2, size=256)
    prepare(root/'s', root/'p', size=256, tile=128, workers=0, progress=False)
    learn = seg_learner(roads_dls(root/'p', bs=2), pretrained=False, path=root)
    learn.export('model.pkl')
    return root/'model.pkl'

def run(model, scene, tile, overlap, bs, scale):
    r = subprocess.run([sys.executable, '-c', CHILD, str(model), str(scene), str(tile), str(overlap), str(bs), str(scale)],
                       capture_output=True, text=True)
    if r.returncode: return dict(error=(r.stderr.strip().splitlines() or ['killed'])[-1], rc=r.returncode)
    return json.loads(r.stdout.strip().splitlines()[-1])

def main(sizes=(1500, 6000), rounds=2, bs=8, tile=128, overlap=0):
    warnings.filterwarnings('ignore')
    from unet_fastai.synthetic import make_scene
    from unet_fastai.core import save_png
    with tempfile.TemporaryDirectory(prefix='bench_predict_') as root:
        root = Path(root)
        model, scale = make_model(root), 512 / 1500
        print(f"model pixels = scene pixels x {scale:.4f} (1500 -> 512); tiles of {tile}, overlap {overlap}, batch {bs}")
        for size in sizes:
            scene = save_png(make_scene(size, size=size)[0], root/f'scene{size}.png')
            res = {'tiled': [], 'whole': []}
            for _ in range(rounds):
                res['tiled'].append(run(model, scene, tile, overlap, bs, scale))
                res['whole'].append(run(model, scene, 0, 0, bs, scale))
            line = {}
            for k, rs in res.items():
                ok = [r for r in rs if 'error' not in r]
                line[k] = (statistics.median(r['s'] for r in ok), max(r['peak_mb'] for r in ok), ok[0]['base_mb']) if ok else rs[0]
            print(f"\n{size}x{size} scene ({round(size * scale)}x{round(size * scale)} model pixels):")
            for k, v in line.items():
                if isinstance(v, dict): print(f"  {k:6s}: failed ({v['error']})"); continue
                print(f"  {k:6s}: {v[0]:7.2f} s   peak RSS {v[1]:6.0f} MB (model loaded: {v[2]:.0f} MB)")
            if all(isinstance(v, tuple) for v in line.values()):
                print(f"  tiled / whole time: {line['tiled'][0] / line['whole'][0]:.2f}x (target <= 1.1x);  "
                      f"tiled peak RSS {line['tiled'][1] / 1024:.2f} GB (target <= 1.5 GB)")

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sizes', type=int, nargs='+', default=[1500, 6000]); ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--bs', type=int, default=8); ap.add_argument('--tile', type=int, default=128)
    ap.add_argument('--overlap', type=int, default=0)
    main(**vars(ap.parse_args()))
