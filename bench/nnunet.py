"""nnU-Net 2D (`nnunetv2`, its shortest trainer) given the same wall time and fold as `bench/budget.py`, on a CPU.

nnU-Net configures itself from a fingerprint of the data (Isensee et al., Nature Methods 2021); this runs it as its
users do, through its own commands, on fold 0 of the folds of `bench/recipes.py` (its `splits_final.json` written
with our split): Penn-Fudan (photos at their own size; person/background) and the 21 real Massachusetts Roads scenes
(at half size, 2 m/pixel, as our roads recipe; white no-data as background, as nnU-Net's own Dataset120 conversion
does). Each data set: `nnUNetv2_plan_and_preprocess -c 2d`, then `nnUNetv2_train ... -tr nnUNetTrainer_1epoch
-device cpu` (one epoch of 250 iterations, then its validation), the whole under `--budget` (default 2m); with
`--longer S` a second training is allowed S seconds, to see how long its shortest schedule takes here. A finished
run is scored on the fold's validation images with the same figures as ours (mIoU over both classes for Penn-Fudan,
road IoU for the roads), from the PNGs nnU-Net writes.

nnU-Net is not a dependency of unet_fastai: install it beside, in an environment that sees the project's torch:

    python3 -m venv /tmp/nnenv
    .venv/bin/python -c "import site; print(site.getsitepackages()[0])" > /tmp/nnenv/lib/python3.11/site-packages/project.pth
    /tmp/nnenv/bin/pip install nnunetv2
    .venv/bin/python bench/nnunet.py --nnunet /tmp/nnenv/bin [--budget 2m] [--longer 900] [--only pennfudan,roads]
"""
import argparse, json, os, signal, subprocess, tempfile, time
from pathlib import Path
import numpy as np
from PIL import Image
from recipes import DATA, data_sets

CODES = {'pennfudan': ('Dataset501_PennFudan', {'background': 0, 'person': 1}),
         'roads': ('Dataset502_Roads', {'background': 0, 'road': 1})}

def _pennfudan_cases():
    "(case, image path, label array) of every Penn-Fudan photo; person = any instance id > 0"
    for img in sorted((DATA/'pennfudan'/'PNGImages').glob('*.png')):
        m = np.asarray(Image.open(DATA/'pennfudan'/'PedMasks'/f'{img.stem}_mask.png'))
        yield img.stem, Image.open(img).convert('RGB'), (m > 0).astype(np.uint8)

def _roads_cases():
    "(case, half-size image, label) of the 21 real road scenes (255 → road; white no-data stays background)"
    for d in ('mass_roads', 'mass_roads_more'):
        for img in sorted((DATA/d/'train'/'sat').glob('*.png')):
            im = Image.open(img).convert('RGB')
            half = (im.width // 2, im.height // 2)
            m = Image.open(DATA/d/'train'/'map'/img.name).convert('L').resize(half, Image.NEAREST)
            yield img.stem, im.resize(half, Image.LANCZOS), (np.asarray(m) > 127).astype(np.uint8)

def write_raw(name, raw:Path)->list:
    "nnU-Net's raw layout (imagesTr/CASE_0000.png, labelsTr/CASE.png, dataset.json); the cases"
    folder, labels = CODES[name]
    d = raw/folder
    (d/'imagesTr').mkdir(parents=True, exist_ok=True); (d/'labelsTr').mkdir(exist_ok=True)
    cases = []
    for case, im, lab in (_pennfudan_cases if name == 'pennfudan' else _roads_cases)():
        im.save(d/'imagesTr'/f'{case}_0000.png'); Image.fromarray(lab).save(d/'labelsTr'/f'{case}.png')
        cases.append(case)
    (d/'dataset.json').write_text(json.dumps(dict(channel_names={'0': 'R', '1': 'G', '2': 'B'}, labels=labels,
                                                  numTraining=len(cases), file_ending='.png')))
    return cases

def _run(cmd, env, seconds)->tuple:
    "Run an nnU-Net command for at most `seconds` (then its whole process group is killed): (finished, seconds, last lines)"
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try: out, ok = p.communicate(timeout=max(1, seconds))[0], p.returncode == 0
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, ok = p.communicate()[0], False
    return ok, time.perf_counter() - t, '\n'.join((out or '').strip().splitlines()[-3:])

def score(name, pred:Path, raw:Path, valid:list)->float:
    "mIoU over both classes (Penn-Fudan) or road IoU (roads) of nnU-Net's validation PNGs"
    cm = np.zeros((2, 2), np.int64)
    for case in valid:
        p = np.asarray(Image.open(pred/f'{case}.png')).astype(np.int64).ravel()
        t = np.asarray(Image.open(raw/CODES[name][0]/'labelsTr'/f'{case}.png')).astype(np.int64).ravel()
        cm += np.bincount(t * 2 + p, minlength=4).reshape(2, 2)
    iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    return float(iou.mean() if name == 'pennfudan' else iou[1])

def main(nnunet, budget='2m', longer=0, only=None, work=None):
    from unet_fastai.train.plan import parse_budget
    sec, bin_ = parse_budget(budget), Path(nnunet)
    with tempfile.TemporaryDirectory(prefix='bench_nnunet_', dir=work) as w:
        w = Path(w)
        env = {**os.environ, 'nnUNet_raw': str(w/'raw'), 'nnUNet_preprocessed': str(w/'pre'), 'nnUNet_results': str(w/'res'),
               'nnUNet_n_proc_DA': '1', 'PYTHONWARNINGS': 'ignore'}
        for spec, groups, parts in data_sets(w/'work', [n for n in CODES if not only or n in only]):
            folder, _ = CODES[spec.name]
            cases = write_raw(spec.name, w/'raw')
            valid = sorted(c for c in cases if c in parts[0])
            train = sorted(c for c in cases if c not in parts[0])
            print(f"\n## {spec.name}: {len(train)} train / {len(valid)} validation cases (fold 0), budget {sec:g} s", flush=True)
            ok, t_pre, tail = _run([str(bin_/'nnUNetv2_plan_and_preprocess'), '-d', folder.split('_')[0][7:], '-c', '2d', '-np', '2'], env, sec)
            print(f"  plan and preprocess: {'done' if ok else 'NOT done'} in {t_pre:.0f} s" + ('' if ok else f": {tail}"), flush=True)
            if not ok: continue
            (w/'pre'/folder/'splits_final.json').write_text(json.dumps([{'train': train, 'val': valid}]))
            plans = json.loads((w/'pre'/folder/'nnUNetPlans.json').read_text())['configurations']['2d']
            print(f"  its plan: patch {plans['patch_size']}, batch {plans['batch_size']}, {len(plans.get('architecture', {}).get('arch_kwargs', {}).get('features_per_stage', []))} stages", flush=True)
            for allowed in ([sec - t_pre] + ([longer] if longer else [])):
                ok, t_train, tail = _run([str(bin_/'nnUNetv2_train'), folder.split('_')[0][7:], '2d', '0', '-tr', 'nnUNetTrainer_1epoch', '-device', 'cpu'], env, allowed)
                res = w/'res'/folder/'nnUNetTrainer_1epoch__nnUNetPlans__2d'/'fold_0'/'validation'
                figure = f"{'mIoU' if spec.name == 'pennfudan' else 'road IoU'} {score(spec.name, res, w/'raw', valid):.3f}" if ok else 'no model'
                print(f"  nnUNetTrainer_1epoch allowed {allowed:.0f} s: {'finished' if ok else 'stopped'} after {t_train:.0f} s; {figure}"
                      + ('' if ok else f"\n    its last lines: {tail}"), flush=True)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--nnunet', required=True, help="folder of nnU-Net's commands (nnUNetv2_train, ...)")
    ap.add_argument('--budget', default='2m'); ap.add_argument('--longer', type=float, default=0)
    ap.add_argument('--only', type=lambda s: s.split(','), default=None); ap.add_argument('--work', default=None)
    main(**vars(ap.parse_args()))
