"""The GPU path, checked and measured in one call: one script, at most 8 minutes on one H200, one table at
the end (and gpu.json under $OUT when it is set, or --json FILE). Exit status 1 when a check fails.

1. Precision modes (CamVid at 360×480 from ../shared/data/camvid, else generated frames of that size; bs 16, --steps
   150 training steps each, Adam at lr 1e-3, the same seed, weights and batches for every mode): fp32, bf16, fp16,
   bf16 + channels_last, and that + torch.compile (`seg_learner(precision=..., channels_last=..., compile=...)`).
   Checks: every step's loss (cross-entropy + Dice, `SegLoss`) finite; the curve within tolerance of fp32's (the mean
   loss of the last third of the steps within 10 %, the 10-step moving mean within 25 % at every step after the 10th);
   the validation mIoU after the steps within 0.05 of fp32's. Measures training img/s (steps after the first 10,
   loader included), the FLOPs of one training step per image (counted by torch.utils.flop_counter.FlopCounterMode
   over the forward pass, the loss and the backward pass of one fp32 batch: 2 per multiply-add of the convolutions and
   matrix products, element-wise work not counted) and the TFLOP/s achieved against the bf16 matrix peak measured in
   the same run (an 8192² bf16 matmul): the utilisation.
2. The data loader alone (training batches on the device, augmentation included, no model) with num_workers 0, 8, 15,
   item cache on and off, against the model step alone (bf16 + channels_last steps on one batch kept on the device):
   which one bounds the epoch.
3. Prediction: a 20 000² GeoTIFF streamed by `predict_geotiff` on the GPU (bf16) at tile batch 8, 32, 128 (Mpx/s of
   the scene), and its mask checked against the CPU's (fp32) on a 2048² crop: on the pixels where the CPU's two most
   likely classes are ≥ 0.1 apart, ≥ 99.9 % the same class (the model's weights are random: no pixel is far from a tie,
   so the margin rule is what bf16 can be held to); overall agreement reported.
4. `torchrun --nproc_per_node 2` training (NCCL) when the machine has two GPUs; else said skipped.

`--smoke` runs every code path on a CPU with tiny sizes in under a minute (torchrun on 2 CPU processes); a test runs it
in CI. On the device machine (no fastai there), carry the wheels (../.library/device/README.md):

    python bench/gpu.py [--smoke] [--steps 150] [--bs 16] [--scene 20000] [--data DIR] [--json FILE]
"""
import argparse, json, math, os, statistics, subprocess, sys, tempfile, time, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from loader import camvid_or_frames, write_frames

FULL = dict(size=(360, 480), bs=16, steps=150, frames=(367, 101), matmul=8192, workers=(0, 8, 15), loader_batches=40,
            scene=20000, crop=2048, batches=(8, 32, 128))
SMOKE = dict(size=(64, 96), bs=4, steps=14, frames=(16, 8), matmul=256, workers=(0, 1, 2), loader_batches=3,
             scene=384, crop=256, batches=(8, 32, 128))
MODES = {'fp32': dict(precision='fp32', channels_last=False), 'bf16': dict(precision='bf16', channels_last=False),
         'fp16': dict(precision='fp16', channels_last=False), 'bf16+cl': dict(precision='bf16', channels_last=True),
         'bf16+cl+compile': dict(precision='bf16', channels_last=True, compile=True)}
WARMUP = 10

def sync():
    import torch
    if torch.cuda.is_available(): torch.cuda.synchronize()

def environment()->dict:
    import torch
    gpu = torch.cuda.is_available()
    return dict(device=torch.cuda.get_device_name(0) if gpu else 'CPU', gpus=torch.cuda.device_count(), torch=torch.__version__,
                cuda=torch.version.cuda, cores=len(os.sched_getaffinity(0)), date=time.strftime('%Y-%m-%d'))

def matmul_peak(n:int, iters:int=20)->float:
    "TFLOP/s of an n×n bf16 matrix product on the device"
    import torch
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    a, b = (torch.randn(n, n, device=dev, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3): a @ b
    sync(); t = time.perf_counter()
    for _ in range(iters): a @ b
    sync()
    return 2 * n ** 3 * iters / (time.perf_counter() - t) / 1e12

def step_flops(learn)->float:
    "FLOPs of one fp32 training step (forward, loss, backward) per image, by FlopCounterMode"
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    xb, yb = learn.dls.one_batch()
    model = learn.model.float().train()
    with FlopCounterMode(display=False) as fc: learn.loss_func(model(xb), yb).backward()
    model.zero_grad()
    return fc.get_total_flops() / len(xb)

def steps_callback(steps:int):
    from fastai.callback.core import Callback, CancelFitException, CancelValidException
    class Steps(Callback):
        "Every training step's loss; the time of the steps after the first WARMUP; the fit stops after `steps`; no validation until then"
        order = 95
        def before_fit(self): self.losses, self.t0, self.t1 = [], None, None
        def before_validate(self): raise CancelValidException  # validated once, after the steps (a compiled model would recompile for it)
        def after_batch(self):
            if not self.training: return
            self.losses.append(float(self.learn.loss))  # a sync each step: the loss is checked at every one
            if len(self.losses) == WARMUP: sync(); self.t0 = time.perf_counter()
            if len(self.losses) == steps: sync(); self.t1 = time.perf_counter(); raise CancelFitException
    return Steps()

def dls_of(data, c, **kwargs):
    from fastai.vision.all import set_seed
    from unet_fastai.data.blocks import camvid_dls
    set_seed(0)
    return camvid_dls(data, size=c['size'], bs=c['bs'], aug='street', **kwargs)

def train_mode(data, c, name, work)->dict:
    "`c['steps']` training steps in mode `name`; losses, img/s, validation mIoU"
    import torch
    from fastai.vision.all import set_seed
    from unet_fastai.train.learner import seg_learner
    from unet_fastai.train.loop import evaluate
    from unet_fastai.spec import model_spec
    dls = dls_of(data, c)
    set_seed(0)
    learn = seg_learner(dls, pretrained=False, path=work/name, **MODES[name])
    learn.recorder.valid_metrics = False  # no validation during the steps (see `steps_callback`)
    cb = steps_callback(c['steps'])
    epochs = math.ceil(c['steps'] / len(dls.train)) + 1
    with learn.no_bar(), learn.no_logging(): learn.fit(epochs, 1e-3, cbs=cb)
    ips = (c['steps'] - WARMUP) * c['bs'] / (cb.t1 - cb.t0)
    learn.recorder.valid_metrics = True
    out = dict(losses=cb.losses, img_s=ips, finite=all(math.isfinite(l) for l in cb.losses), mIoU=evaluate(learn)['mIoU'],
               precision=model_spec(learn).precision)
    if name == 'fp32': out['flops'] = step_flops(learn)
    del learn; torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return out

def moving(v, k=10): return [statistics.mean(v[max(0, i - k + 1):i + 1]) for i in range(len(v))]

def curve_checks(res:dict)->dict:
    "Each mode's losses against fp32's, by the tolerances of the docstring"
    ref, out = res['fp32'], {}
    third = len(ref['losses']) // 3
    for m, r in res.items():
        last = statistics.mean(r['losses'][-third:]) / statistics.mean(ref['losses'][-third:]) - 1
        worst = max(abs(a / b - 1) for a, b in list(zip(moving(r['losses']), moving(ref['losses'])))[WARMUP:])
        out[m] = dict(last_third=last, worst_moving=worst, ok=r['finite'] and abs(last) <= 0.10 and worst <= 0.25 and
                      abs(r['mIoU'] - ref['mIoU']) <= 0.05)
    return out

def model_step_rate(data, c, work, n=30)->float:
    "img/s of bf16 + channels_last training steps on one batch kept on the device (no loader)"
    import torch
    from unet_fastai.train.learner import seg_learner
    learn = seg_learner(dls_of(data, c), pretrained=False, path=work/'step', precision='bf16', channels_last=True)
    xb, yb = learn.dls.one_batch()
    dev = xb.device
    model = learn.model.to(dev, memory_format=torch.channels_last).train()
    opt, loss_func = torch.optim.Adam(model.parameters(), 1e-3), learn.loss_func.to(dev)  # its class weights on the device
    xb = xb.as_subclass(torch.Tensor).contiguous(memory_format=torch.channels_last)
    for i in range(n + 3):
        if i == 3: sync(); t = time.perf_counter()
        with torch.autocast(dev.type, torch.bfloat16, enabled=dev.type == 'cuda'): loss = loss_func(model(xb), yb)
        loss.backward(); opt.step(); opt.zero_grad()
    sync()
    return n * len(xb) / (time.perf_counter() - t)

def loader_rates(data, c, work)->dict:
    "img/s of the training loader alone (batches on the device, augmented) by (workers, cache)"
    out = {}
    for w in c['workers']:
        for cache in (True, False):
            d = Path(tempfile.mkdtemp(dir=work))
            t = time.perf_counter()
            dls = dls_of(data, c, num_workers=w, cache_mb=4096 if cache else 0, cache_dir=d)
            build = time.perf_counter() - t
            it, n = iter(dls.train), 0
            next(it)  # workers started, first batch
            sync(); t = time.perf_counter()
            for _ in range(c['loader_batches']):
                try: xb, _ = next(it)
                except StopIteration: it = iter(dls.train); xb, _ = next(it)
                n += len(xb)
            sync()
            out[f'{w}/{"on" if cache else "off"}'] = dict(img_s=n / (time.perf_counter() - t), build_s=build)
            del it, dls
    return out

def write_scene(path, size:int, block:int=2000, distinct:int=4):
    "A size² RGB GeoTIFF (EPSG:26986, 1 m pixels) of generated aerial blocks (`distinct` of them, repeated)"
    import numpy as np, rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window
    from unet_fastai.data.synthetic import make_scene
    block = min(block, size)
    blocks = [np.moveaxis(make_scene(i, size=block)[0], -1, 0) for i in range(distinct)]
    with rasterio.open(path, 'w', driver='GTiff', height=size, width=size, count=3, dtype='uint8', crs='EPSG:26986',
                       transform=from_origin(230000, 900000, 1, 1), tiled=True, blockxsize=512, blockysize=512) as ds:
        for i, y in enumerate(range(0, size, block)):
            for j, x in enumerate(range(0, size, block)):
                h, w = min(block, size - y), min(block, size - x)
                ds.write(blocks[(i + j) % distinct][:, :h, :w], window=Window(x, y, w, h))
    return path

def predict_check(c, work)->dict:
    "Mpx/s of the scene on the device at each tile batch; the device's mask against the CPU's on a crop"
    import numpy as np, rasterio, torch
    from rasterio.windows import Window
    from fastai.learner import load_learner
    from predict import make_model
    from unet_fastai.io.raster import Raster
    from unet_fastai.infer.loading import load_model
    from unet_fastai.infer.outputs import predict_geotiff
    model = make_model(work/'roads')
    scale = 512 / 1500  # the reference workflow's training scale (bench/predict.py)
    scene = write_scene(work/'scene.tif', c['scene'])
    learn, out = load_model(model), dict(rates={})
    for bs in c['batches']:
        sync(); t = time.perf_counter()
        with Raster(scene) as r: predict_geotiff(learn, r, work/f'mask{bs}.tif', tile=128, bs=bs, scale=scale)
        sync(); out['rates'][bs] = c['scene'] ** 2 / 1e6 / (time.perf_counter() - t)
    crop = work/'crop.tif'
    with rasterio.open(scene) as src:
        prof = {**src.profile, 'width': c['crop'], 'height': c['crop'], 'transform': src.window_transform(Window(0, 0, c['crop'], c['crop']))}
        with rasterio.open(crop, 'w', **prof) as dst: dst.write(src.read(window=Window(0, 0, c['crop'], c['crop'])))
    masks = {}
    for dev, l in (('device', learn), ('cpu', load_learner(model, cpu=True))):
        with Raster(crop) as r: predict_geotiff(l, r, work/f'crop_{dev}.tif', probs_path=work/f'probs_{dev}.tif', tile=128, bs=32, scale=scale)
        with rasterio.open(work/f'crop_{dev}.tif') as m: masks[dev] = m.read(1)
    with rasterio.open(work/'probs_cpu.tif') as p: probs = np.sort(p.read().astype(np.float32) / 255, axis=0)
    sure = probs[-1] - probs[-2] >= 0.1
    same = masks['device'] == masks['cpu']
    out.update(agree=float(same.mean()), agree_sure=float(same[sure].mean()) if sure.any() else 1., sure=float(sure.mean()),
               on=str(next(learn.model.parameters()).device))
    out['ok'] = out['agree_sure'] >= 0.999
    return out

def torchrun_check(data, c, work, smoke:bool)->dict:
    "Two processes training CamVid for one epoch (NCCL on two GPUs; gloo on the CPU in --smoke)"
    import torch
    if torch.cuda.device_count() < 2 and not smoke: return dict(skipped=f"{torch.cuda.device_count()} GPU(s): needs 2")
    script = work/'train.py'
    script.write_text("from unet_fastai.cli.main import unet_fastai_train\nunet_fastai_train()\n")
    n = 8 * c['bs'] if not smoke else 4 * c['bs']
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', str(script), 'camvid', str(data),
           '--out', str(work/'ddp'), '--size', json.dumps(list(c['size'])), '--bs', str(c['bs']), '--n-train', str(n),
           '--n-valid', str(2 * c['bs']), '--epochs', '2', '--lr', '1e-3', '--pretrained', 'false']
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get('PYTHONPATH', '')])}
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    out = dict(rc=r.returncode, s=time.perf_counter() - t, ok=r.returncode == 0 and (work/'ddp'/'model.pkl').exists())
    if not out['ok']: out['error'] = (r.stderr or r.stdout)[-1500:]
    else:
        import csv
        rows = list(csv.DictReader(open(work/'ddp'/'history.csv')))
        out['mIoU'] = float(rows[-1]['mIoU'])
    return out

def attempt(f, *args)->dict:
    "f(*args), or {'error': the last lines of its traceback}: one failing part never loses the others' figures"
    import traceback
    try: return f(*args)
    except Exception: return dict(error=' / '.join(traceback.format_exc().strip().splitlines()[-3:]))

def curves_of(res:dict)->dict:
    "`curve_checks` of the modes that ran (all fail when fp32, the reference, did not)"
    ran = {m: r for m, r in res['modes'].items() if 'error' not in r}
    if 'fp32' not in ran: return {m: dict(ok=False) for m in res['modes']}
    return {**{m: dict(ok=False) for m in res['modes']}, **curve_checks(ran)}

def _training_table(res)->list:
    flops = res['modes'].get('fp32', {}).get('flops')
    lines = [f"\nTraining, {res['size'][0]}×{res['size'][1]}, bs {res['bs']}, {res['steps']} steps" +
             (f"; {flops / 1e9:.1f} GFLOP a training step per image (FlopCounterMode)" if flops else ''),
             "| mode | trains in | img/s | TFLOP/s | utilisation | losses finite | last third vs fp32 | worst moving mean | mIoU | check |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m, r in res['modes'].items():
        k = res['curves'][m]
        if 'error' in r or 'last_third' not in k: lines.append(f"| {m} | {r.get('error', 'no fp32 reference')} | | | | | | | | FAIL |"); continue
        tf = r['img_s'] * (flops or 0) / 1e12
        lines.append(f"| {m} | {r['precision']} | {r['img_s']:.0f} | {tf:.1f} | {tf / res['peak_tflops']:.1%} | {r['finite']} | "
                     f"{k['last_third']:+.1%} | {k['worst_moving']:.1%} | {r['mIoU']:.3f} | {'pass' if k['ok'] else 'FAIL'} |")
    return lines

def _loader_table(res)->list:
    step, ld = res['model_step'], res['loader']
    if 'error' in ld: return [f"\nLoader alone: {ld['error']}"]
    step_s = f"{step:.0f} img/s" if isinstance(step, float) else step['error']
    lines = [f"\nLoader alone (img/s; build: seconds to make the DataLoaders, the cache written) against the model step alone "
             f"(bf16 + channels_last, one batch on the device): {step_s}", "| workers / cache | img/s | build s |", "| --- | --- | --- |"]
    lines += [f"| {k} | {v['img_s']:.0f} | {v['build_s']:.1f} |" for k, v in ld.items()]
    best = max(v['img_s'] for v in ld.values())
    if isinstance(step, float): lines.append(f"the epoch is bound by the {'loader' if best < step else 'model'} (best loader {best:.0f} img/s)")
    return lines

def _predict_lines(res)->list:
    p = res['predict']
    if 'error' in p: return [f"\nPrediction: FAIL: {p['error']}"]
    return [f"\nPrediction of a {res['scene']}² GeoTIFF (predict_geotiff, model on {p['on']}, tiles of 128, scale 512/1500): " +
            ', '.join(f"batch {b}: {v:.1f} Mpx/s" for b, v in p['rates'].items()),
            f"crop {res['crop']}² against the CPU: {p['agree']:.2%} of pixels the same class, {p['agree_sure']:.3%} of the "
            f"{p['sure']:.0%} with a margin ≥ 0.1 ({'pass' if p['ok'] else 'FAIL'}: ≥ 99.9 %)"]

def _torchrun_line(res)->str:
    t = res['torchrun']
    if 'skipped' in t: return f"\ntorchrun --nproc_per_node 2: skipped ({t['skipped']})"
    if 'rc' not in t: return f"\ntorchrun --nproc_per_node 2: FAIL: {t['error']}"
    return (f"\ntorchrun --nproc_per_node 2: {'pass' if t['ok'] else 'FAIL'} (rc {t['rc']}, {t['s']:.0f} s" +
            (f", mIoU {t['mIoU']:.3f})" if t['ok'] else f"): {t['error']}"))

def table(res:dict)->str:
    "The results as text: a heading line, the training table, the loader table, prediction, torchrun"
    e = res['environment']
    head = (f"{e['device']} ({e['gpus']} GPU), torch {e['torch']}, CUDA {e['cuda']}, {e['cores']} cores, {e['date']}"
            f"{' (smoke: tiny sizes)' if res['smoke'] else ''}; bf16 matmul peak {res['peak_tflops']:.1f} TFLOP/s; data: {res['data']}")
    return '\n'.join([head, *_training_table(res), *_loader_table(res), *_predict_lines(res), _torchrun_line(res)])

def passed(res:dict)->bool:
    return (all(k['ok'] for k in res['curves'].values()) and res['predict'].get('ok', False) and
            res['torchrun'].get('ok', 'skipped' in res['torchrun']) and 'error' not in res['loader'] and isinstance(res['model_step'], float))

def main(smoke=False, steps=None, bs=None, scene=None, data=None, json_path=None, modes=None):
    warnings.filterwarnings('ignore')
    c = dict(SMOKE if smoke else FULL)
    c.update({k: v for k, v in dict(steps=steps, bs=bs, scene=scene).items() if v})
    json_path = json_path or (Path(os.environ['OUT'])/'gpu.json' if os.environ.get('OUT') else None)
    t0 = time.perf_counter()
    def say(what): print(f"[{time.perf_counter() - t0:5.0f} s] {what}", flush=True)
    def save(res):  # after every part: a run stopped at its time limit still brings back what it measured
        if json_path: Path(json_path).write_text(json.dumps(res, indent=1, default=str))
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        os.environ.setdefault('UNET_FASTAI_CACHE', str(work/'cache'))
        if data is None and not smoke: data = camvid_or_frames(work, None, c['size'], c['frames'])
        elif data is None: data = write_frames(work/'frames', *c['frames'], hw=c['size'])
        res = dict(environment=environment(), smoke=smoke, data=str(data), size=c['size'], bs=c['bs'], steps=c['steps'],
                   scene=c['scene'], crop=c['crop'], peak_tflops=matmul_peak(c['matmul']), modes={})
        say(f"{res['environment']['device']}: bf16 matmul {res['peak_tflops']:.1f} TFLOP/s")
        for m in modes or MODES:
            r = res['modes'][m] = attempt(train_mode, data, c, m, work)
            say(f"{m}: " + (r['error'] if 'error' in r else f"{r['img_s']:.0f} img/s, mIoU {r['mIoU']:.3f}")); save(res)
        res['curves'] = curves_of(res)
        res['model_step'] = attempt(model_step_rate, data, c, work); say(f"model step alone: {res['model_step']}"); save(res)
        res['loader'] = attempt(loader_rates, data, c, work); say("loader measured"); save(res)
        res['predict'] = attempt(predict_check, c, work); say("prediction measured"); save(res)
        res['torchrun'] = attempt(torchrun_check, data, c, work, smoke); say("torchrun done")
    res['table'] = text = table(res)
    save(res)
    print('\n' + text)
    ok = passed(res)
    print(f"\n{'all checks pass' if ok else 'a check FAILED'} ({time.perf_counter() - t0:.0f} s)")
    return ok

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--smoke', action='store_true', help="every code path on a CPU, tiny sizes, under a minute")
    p.add_argument('--steps', type=int, help="training steps a mode (default 150; smoke 14)")
    p.add_argument('--bs', type=int, help="batch size (default 16)")
    p.add_argument('--scene', type=int, help="side of the predicted GeoTIFF (default 20000)")
    p.add_argument('--data', help="a CamVid folder (default: ../shared/data/camvid, else generated frames)")
    p.add_argument('--modes', nargs='+', choices=list(MODES), help="precision modes (default: all; fp32 is the reference)")
    p.add_argument('--json', dest='json_path', help="write the results here (default: $OUT/gpu.json when OUT is set)")
    a = p.parse_args()
    if a.modes and 'fp32' not in a.modes: a.modes = ['fp32', *a.modes]
    sys.exit(0 if main(a.smoke, a.steps, a.bs, a.scene, a.data, a.json_path, a.modes) else 1)
