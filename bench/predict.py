"""Whole-scene prediction benchmark: `predict_scene` (tiles) against one whole-image forward pass, and streamed GeoTIFFs.

A 1500x1500 and a 6000x6000 generated scene (PNG) are predicted by a road U-Net (ResNet34 encoder; weights random:
time and memory do not depend on them) at the training scale of the reference workflow (1500 -> 512, so 6000 -> 2048
model pixels). Every run is a fresh process, so its peak RSS (VmHWM, the model included) is its own; the runs
alternate tiled/whole and the median time is reported. Targets: peak RSS <= 1.5 GB whatever the scene size; tiled
time <= 1.1x the whole-image pass at overlap 0.

Then georeferenced scenes (GeoTIFF, EPSG:26986, 1 m pixels; 1500x1500 and 20000x20000 by default, the large one
written window by window from generated 2000x2000 blocks) are streamed by `predict_geotiff` into a class-mask
Cloud-Optimised GeoTIFF, as `unet_fastai_predict` does. Targets: peak RSS <= 1.5 GB at any size; time per megapixel
of the large scene within 1.1x of the 1500x1500 figure (cost linear in pixels).

For each GeoTIFF it says where the time goes (`predict_strips`' stats): the model's forward passes, waiting for the
scene's rows (read ahead in a background thread), waiting for the writer (a background thread), and the rest (tiles
blended, rows resized, the main thread's own work); target: the model >= 85 % of the wall time on the large scene.

With --processes N (N > 1): --n-scenes GeoTIFF scenes of --scene-size² predicted by `unet_fastai_predict` on 1 process
and under `torchrun --nproc_per_node N` (each process one thread), the outputs compared byte for byte; then a run
killed (SIGKILL to every process) once a third of the scenes are done, and its rerun: scenes kept and redone, time.

    python bench/predict.py [--sizes 1500 6000] [--geo-sizes 1500 20000] [--rounds 2] [--bs 8] [--tile 128]
    python bench/predict.py --processes 2 [--n-scenes 6] [--scene-size 1500]

With --seams MODEL SCENE...: how much a tiled-and-blended prediction differs from one whole-image forward pass, near
the tile seams (within --band model pixels of the line where two neighbouring tiles weigh the same: the middle of their
overlap, or their shared edge at overlap 0) against the rest: the share of pixels whose class differs and the mean
absolute difference of the probabilities, at the default overlap (tile // 4), at half a tile and at 0, and a picture
of the difference (--picture). A seam a person could see is one that stands out from its surroundings (the seams
differ from the whole image more than 1.5x the rest does, either measure) and is there to see (the class differs on at
least 1 % of the seams' pixels). Target: no visible seam at the default overlap.

    python bench/predict.py --seams data/demo/model/model.pkl ../shared/data/mass_roads/train/sat/*.png [--picture seams.png]
"""
import argparse, json, statistics, subprocess, sys, tempfile, time, warnings
from pathlib import Path

CHILD = r'''
import json, re, sys, time, warnings
warnings.filterwarnings('ignore')
from pathlib import Path
from fastai.learner import load_learner
from unet_fastai.io.raster import Raster
from unet_fastai.infer.predict import predict_scene
from unet_fastai.infer.outputs import predict_geotiff
import numpy as np
model, scene, tile, overlap, bs, scale = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
def hwm_mb():  # peak RSS of this address space (ru_maxrss would include the parent's peak: Linux keeps it across exec)
    return int(re.search(r'VmHWM:\s+(\d+) kB', open('/proc/self/status').read())[1]) / 1024
learn = load_learner(model)
predict_scene(learn, np.zeros((64, 64, 3), np.uint8), tile=0, scale=1)  # warm up
base = hwm_mb()
t = time.perf_counter()
stats = {}
if scene.endswith('.tif'):  # streamed, GeoTIFF in and out
    with Raster(scene) as r: predict_geotiff(learn, r, Path(scene).with_name('mask_out.tif'), tile=tile, overlap=overlap, bs=bs, scale=scale, stats=stats)
    shape = r.height, r.width
else: shape = predict_scene(learn, scene, tile=tile, overlap=overlap, bs=bs, scale=scale)[0].shape
dt = time.perf_counter() - t
print(json.dumps(dict(s=dt, peak_mb=hwm_mb(), base_mb=base, shape=shape, stats=stats)))
'''

def make_model(root):
    from unet_fastai.data.synthetic import write_scenes
    from unet_fastai.data.prepare import prepare
    from unet_fastai.data.blocks import roads_dls
    from unet_fastai.train.learner import seg_learner
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

def write_geotiff(path, size, block=2000):
    "A size x size RGB GeoTIFF (EPSG:26986, 1 m pixels) written window by window from generated scenes"
    import numpy as np, rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window
    from unet_fastai.data.synthetic import make_scene
    with rasterio.open(path, 'w', driver='GTiff', height=size, width=size, count=3, dtype='uint8', crs='EPSG:26986',
                       transform=from_origin(230000, 900000, 1, 1), tiled=True, blockxsize=512, blockysize=512) as ds:
        for i, y in enumerate(range(0, size, block)):
            for j, x in enumerate(range(0, size, block)):
                h, w = min(block, size - y), min(block, size - x)
                img = make_scene(i * 100 + j, size=block)[0][:h, :w]
                ds.write(np.moveaxis(img, -1, 0), window=Window(x, y, w, h))
    return path

def geo_bench(root, model, scale, sizes, bs, tile, overlap):
    "Streamed GeoTIFF prediction: time per megapixel and peak RSS by scene size"
    print(f"\nGeoTIFF scenes streamed by predict_geotiff (tiles of {tile}, overlap {overlap}, batch {bs}):")
    first = None
    for size in sizes:
        scene = write_geotiff(root/f'geo{size}.tif', size)
        r = run(model, scene, tile, overlap, bs, scale)
        scene.unlink(); (root/'mask_out.tif').unlink(missing_ok=True)
        if 'error' in r: print(f"  {size}x{size}: failed ({r['error']})"); continue
        per_mp = r['s'] / (size * size / 1e6)
        first = first or per_mp
        print(f"  {size:5d}x{size:<5d}: {r['s']:8.1f} s  {per_mp:6.3f} s/Mpx ({per_mp / first:.2f}x the first; target <= 1.1x)  "
              f"peak RSS {r['peak_mb'] / 1024:.2f} GB (target <= 1.5 GB; model loaded: {r['base_mb']:.0f} MB)")
        st = r['stats']
        rest = r['s'] - st.get('model_s', 0) - st.get('read_wait_s', 0) - st.get('write_wait_s', 0)
        print(f"  {'':11}  {size * size / 1e6 / r['s']:.2f} Mpx/s; model {st.get('model_s', 0) / r['s']:.0%} (target >= 85 %), waiting for "
              f"reads {st.get('read_wait_s', 0) / r['s']:.1%}, for writes {st.get('write_wait_s', 0) / r['s']:.1%}, blending, resizing and "
              f"the rest {rest / r['s']:.1%}")

def cli(*args, procs=1):
    "`unet_fastai_predict ARGS` on one process, or under torchrun on `procs` (one thread each)"
    bin_ = Path(sys.executable).parent
    launch = [str(bin_/'torchrun'), '--standalone', '--nproc_per_node', str(procs), '--no-python'] if procs > 1 else []
    return [*launch, str(bin_/'unet_fastai_predict'), *map(str, args)]

def outputs(folder)->dict:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.suffix == '.tif'}

def processes_bench(root, model, procs, n_scenes, scene_size, bs, tile):
    "N scenes on 1 process against `procs` processes, the same outputs; a killed run and its rerun"
    (root/'county').mkdir()
    for i in range(n_scenes): write_geotiff(root/'county'/f's{i}.tif', scene_size)
    args = (model, root/'county', '--bs', bs, '--tile', tile, '--scale', 512 / 1500)
    times = {}
    for n in (1, procs):
        t = time.perf_counter()
        r = subprocess.run(cli(*args, '--out', root/f'out{n}', procs=n), capture_output=True, text=True)
        times[n] = time.perf_counter() - t
        if r.returncode: sys.exit(f"{n} process(es) failed: {r.stderr[-2000:]}")
    same = outputs(root/'out1') == outputs(root/f'out{procs}')
    print(f"\n{n_scenes} GeoTIFF scenes of {scene_size}² (tiles of {tile}, batch {bs}): 1 process {times[1]:.1f} s, {procs} processes "
          f"{times[procs]:.1f} s ({times[1] / times[procs]:.2f}x); outputs byte-identical: {same}")
    out = root/'killed'
    p = subprocess.Popen(cli(*args, '--out', out, procs=procs), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (out/'.predicted').is_dir() or len(list((out/'.predicted').glob('*.json'))) < max(1, n_scenes // 3): time.sleep(0.05)
    subprocess.run(['pkill', '-KILL', '-f', str(out)])  # torchrun and its workers (which have sessions of their own)
    p.wait()
    while subprocess.run(['pgrep', '-f', str(out)], capture_output=True).returncode == 0: time.sleep(0.05)
    kept, left = len(list((out/'.predicted').glob('*.json'))), len(list(out.glob('.*.tmp')))
    t = time.perf_counter()
    r = subprocess.run(cli(*args, '--out', out, procs=procs), capture_output=True, text=True)
    said = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-300:]
    print(f"killed after {kept} scenes ({left} temporaries left); the rerun took {time.perf_counter() - t:.1f} s: {said}; "
          f"temporaries now {len(list(out.glob('.*.tmp')))}; outputs as the 1-process run: {outputs(out) == outputs(root/'out1')}")

def seam_band(n:int, tile:int, overlap:int, band:int):
    "Positions along an axis of `n` model pixels within `band` of a seam: where two neighbouring tiles weigh the same (the middle of their overlap)"
    import numpy as np
    from unet_fastai.io.geometry import tile_starts
    starts = tile_starts(n, tile, overlap)
    near = np.zeros(n, bool)
    for a, b in zip(starts, starts[1:]): near[max(0, (a + tile + b) // 2 - band):(a + tile + b) // 2 + band] = True
    return near

def seams_bench(model, scenes, tile=None, band=8, picture=None):
    "Tiled-and-blended against whole-image prediction, near the seams and inside the tiles, at the default overlap and at 0"
    import numpy as np
    from PIL import Image
    from unet_fastai.infer.loading import load_model
    from unet_fastai.infer.predict import predict_scene, _model_size
    from unet_fastai.io.raster import read_image
    from unet_fastai.spec import model_spec
    learn = load_model(model)
    spec = model_spec(learn)
    tile = tile or spec.tile or 128
    print(f"seams: {model} (tile {tile}); ±{band} model px around the seams (where neighbouring tiles weigh the same) against the rest; tiled vs whole image")
    print("| scene | model px | overlap | seam px | class differs: seams | rest | ratio | mean abs. prob. diff.: seams | rest | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    shown, worst = [], {}
    for f in scenes:
        img = read_image(f)
        h, w = img.shape[:2]
        hm, wm = _model_size(h, w, spec.size, spec.scale)  # as prediction rescales it for this model
        img = np.asarray(Image.fromarray(img).resize((wm, hm), Image.LANCZOS)) if (hm, wm) != (h, w) else img  # the model's pixels
        m0, p0 = predict_scene(learn, img, tile=0, size=(hm, wm))
        for overlap in (tile // 4, tile // 2, 0):
            m, p = predict_scene(learn, img, tile=tile, overlap=overlap, size=(hm, wm))
            seam = seam_band(hm, tile, overlap, band)[:, None] | seam_band(wm, tile, overlap, band)[None]
            diff, dp = m != m0, np.abs(p.astype(np.float32) - p0.astype(np.float32)).mean(0)
            c = [diff[seam].mean(), diff[~seam].mean()]; d = [dp[seam].mean(), dp[~seam].mean()]
            ratio = lambda a: a[0] / a[1] if a[1] > 0 else float('inf') if a[0] > 0 else 1.0
            seen = bool(max(ratio(c), ratio(d)) > 1.5 and c[0] >= 0.01)  # stands out, and is there to see
            worst[overlap] = worst.get(overlap, []) + [Path(f).name] * seen
            print(f"| {Path(f).name} | {wm}×{hm} | {overlap} | {seam.mean():.0%} | {c[0]:.4f} | {c[1]:.4f} | {ratio(c):.2f} | "
                  f"{d[0]:.4f} | {d[1]:.4f} | {ratio(d):.2f} |")
            if not shown or Path(f) == shown[0][0]: shown.append((Path(f), overlap, dp))
    d = tile // 4
    print(f"target: no visible seam (ratio > 1.5 and class differing on >= 1 % of the seams' pixels) at the default overlap ({d}): "
          f"{'met' if not worst[d] else 'NOT met: ' + ', '.join(worst[d])}; visible at overlap 0 in {', '.join(worst[0]) or 'none'}")
    if picture:
        import matplotlib; matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, axs = plt.subplots(1, len(shown), figsize=(6 * len(shown), 5.4))
        top = max(float(np.percentile(s[2], 99.9)) for s in shown) or 1
        for ax, (f, overlap, dp) in zip(axs, shown):
            im = ax.imshow(dp, cmap='magma', vmin=0, vmax=top); ax.axis('off')
            ax.set_title(f"{f.name}: |tiled − whole|, overlap {overlap}")
        fig.colorbar(im, ax=list(axs), shrink=0.8, label='mean absolute difference of the probabilities')
        fig.savefig(picture, dpi=80, bbox_inches='tight'); print(f"picture: {picture}")

def main(sizes=(1500, 6000), geo_sizes=(1500, 20000), rounds=2, bs=8, tile=128, overlap=0, processes=1, n_scenes=6, scene_size=1500,
         seams=None, band=8, picture=None):
    warnings.filterwarnings('ignore')
    if seams: return seams_bench(seams[0], seams[1:], None, band, picture)
    from unet_fastai.data.synthetic import make_scene
    from unet_fastai.io.writers import save_image
    with tempfile.TemporaryDirectory(prefix='bench_predict_') as root:
        root = Path(root)
        model, scale = make_model(root), 512 / 1500
        if processes > 1: return processes_bench(root, model, processes, n_scenes, scene_size, bs, tile)
        print(f"model pixels = scene pixels x {scale:.4f} (1500 -> 512); tiles of {tile}, overlap {overlap}, batch {bs}")
        for size in sizes:
            scene = save_image(make_scene(size, size=size)[0], root/f'scene{size}.png')
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
        if geo_sizes: geo_bench(root, model, scale, geo_sizes, bs, tile, overlap)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sizes', type=int, nargs='*', default=[1500, 6000]);
    ap.add_argument('--geo-sizes', type=int, nargs='*', default=[1500, 20000]); ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--bs', type=int, default=8); ap.add_argument('--tile', type=int, default=128)
    ap.add_argument('--overlap', type=int, default=0)
    ap.add_argument('--processes', type=int, default=1, help='compare 1 process with this many under torchrun (and a killed run)')
    ap.add_argument('--n-scenes', type=int, default=6); ap.add_argument('--scene-size', type=int, default=1500)
    ap.add_argument('--seams', nargs='+', help='MODEL SCENE...: tiled against whole-image prediction near the seams and inside the tiles')
    ap.add_argument('--band', type=int, default=8); ap.add_argument('--picture', help='--seams: the difference maps as a PNG')
    main(**vars(ap.parse_args()))
