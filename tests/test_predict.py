"Whole-scene prediction and evaluation of the real 1500x1500 Massachusetts scenes through the CLIs, PyTorch and ONNX"
import json, subprocess, warnings
import numpy as np, pytest, torch
from PIL import Image
from conftest import shared, command
from unet_fastai.synthetic import write_scenes
from unet_fastai.prepare import prepare
from unet_fastai.train import train_roads

@pytest.fixture(scope='module')
def model(tmp_path_factory):
    "A road model trained briefly on generated 1500x1500 scenes prepared as in the reference (512, tiles of 128)"
    d = tmp_path_factory.mktemp('roads')
    write_scenes(d/'scenes', n=3, size=1500)
    prepare(d/'scenes', d/'prep', size=512, tile=128, workers=2, progress=False)
    learn = train_roads(d/'prep', bs=8, epochs=1, freeze_epochs=0, lr=5e-3, pretrained=False, out=d/'model')
    assert learn.predict_defaults == {'tile': 128, 'scale': 512 / 1500}
    return d/'model'/'model.pkl'

def run(*args):
    return subprocess.run([*map(str, args)], capture_output=True, text=True)

def test_predict_real_scenes(model, tmp_path):
    sat = shared('mass_roads')/'train'/'sat'
    r = run(command('unet_fastai_predict'), model, sat, '--out', tmp_path, '--binary-255')
    assert r.returncode == 0, r.stderr[-3000:]
    for p in sorted(sat.glob('*.png')):
        m = np.asarray(Image.open(tmp_path/f'{p.stem}_mask.png'))
        assert m.shape == (1500, 1500) and set(np.unique(m)) <= {0, 255}
        assert np.asarray(Image.open(tmp_path/f'{p.stem}_overlay.png')).shape == (1500, 1500, 3)

def test_evaluate_real_scenes(model, tmp_path):
    base = shared('mass_roads')/'train'
    r = run(command('unet_fastai_evaluate'), model, '--images', base/'sat', '--masks', base/'map', '--json', tmp_path/'r.json')
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path/'r.json').read_text())
    assert res['scenes'] == 2 and res['pixels'] == 2 * 1500 * 1500
    assert 0 <= res['relaxed_breakeven'] <= 1 and set(res['iou']) <= {'background', 'road'}
    assert 'relaxed P/R breakeven (ρ=3)' in r.stdout

def test_onnx_same_masks_on_real_scene(model, tmp_path):
    from fastai.learner import load_learner
    from unet_fastai.onnx import export_onnx
    warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
    export_onnx(load_learner(model), tmp_path/'m.onnx')
    sat = shared('mass_roads')/'train'/'sat'
    for m in (model, tmp_path/'m.onnx'):
        r = run(command('unet_fastai_predict'), m, sat/'21628930_15.png', '--out', tmp_path/m.suffix[1:])
        assert r.returncode == 0, r.stderr[-3000:]
    a, b = (np.asarray(Image.open(tmp_path/k/'21628930_15_mask.png')) for k in ('pkl', 'onnx'))
    assert a.shape == (1500, 1500) and (a == b).mean() >= 0.9999

def test_bad_inputs(model, tmp_path):
    (tmp_path/'empty.png').write_bytes(b'')
    r = run(command('unet_fastai_predict'), model, tmp_path/'empty.png', '--out', tmp_path/'o')
    errors = [l for l in r.stderr.splitlines() if l.startswith('error: ')]
    assert r.returncode == 1 and 'Traceback' not in r.stderr
    assert errors == [f"error: {tmp_path/'empty.png'}: empty file (0 bytes); re-export or re-download it"]
    r = run(command('unet_fastai_predict'), tmp_path/'nope.pkl', tmp_path, '--out', tmp_path/'o')
    assert r.returncode == 1 and 'nope.pkl: model file not found' in r.stderr
