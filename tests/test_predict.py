"Whole-scene prediction and evaluation of the real 1500x1500 Massachusetts scenes through the CLIs, PyTorch and ONNX"
import json, os, subprocess, sys, time, warnings
import numpy as np, pytest, torch
from PIL import Image
from conftest import shared, command
from unet_fastai.data.synthetic import write_scenes
from unet_fastai.data.prepare import prepare
from unet_fastai.train.loop import train_roads
from unet_fastai.spec import model_spec

@pytest.fixture(scope='module')
def model(tmp_path_factory):
    "A road model trained briefly on generated 1500x1500 scenes prepared as in the reference (512, tiles of 128)"
    d = tmp_path_factory.mktemp('roads')
    write_scenes(d/'scenes', n=3, size=1500)
    prepare(d/'scenes', d/'prep', size=512, tile=128, workers=2, progress=False)
    learn = train_roads(d/'prep', bs=8, epochs=1, freeze_epochs=0, lr=5e-3, pretrained=False, out=d/'model')
    assert (model_spec(learn).tile, model_spec(learn).scale) == (128, 512 / 1500)
    return d/'model'/'model.pkl'

def run(*args):
    return subprocess.run([*map(str, args)], capture_output=True, text=True)

def test_predict_real_scenes(model, tmp_path):
    sat = shared('mass_roads')/'train'/'sat'
    r = run(command('unet_fastai_predict'), model, sat, '--out', tmp_path, '--binary-255', '--uncertainty')
    assert r.returncode == 0, r.stderr[-3000:]
    for p in sorted(sat.glob('*.png')):
        m = np.asarray(Image.open(tmp_path/f'{p.stem}_mask.png'))
        assert m.shape == (1500, 1500) and set(np.unique(m)) <= {0, 255}
        assert np.asarray(Image.open(tmp_path/f'{p.stem}_overlay.png')).shape == (1500, 1500, 3)
        u = np.asarray(Image.open(tmp_path/f'{p.stem}_uncertainty.png'))  # photos: the entropy as gray
        assert u.shape == (1500, 1500) and u.dtype == np.uint8 and u.max() > 0

def test_evaluate_real_scenes(model, tmp_path):
    base = shared('mass_roads')/'train'
    r = run(command('unet_fastai_evaluate'), model, '--images', base/'sat', '--masks', base/'map', '--json', tmp_path/'r.json')
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path/'r.json').read_text())
    assert res['scenes'] == 2 and res['pixels'] == 2 * 1500 * 1500
    assert 0 <= res['relaxed_breakeven'] <= 1 and set(res['iou']) <= {'background', 'road'}
    assert 'relaxed P/R breakeven (ρ=3)' in r.stdout
    assert 0 <= res['calibration']['ece'] <= 1 and 0 <= res['uncertainty']['auroc'] <= 1 and 'errors found by entropy (AUROC)' in r.stdout
    assert res['uncertainty']['error_left']['0%'] == pytest.approx(1 - res['accuracy'])

def test_onnx_same_masks_on_real_scene(model, tmp_path):
    from fastai.learner import load_learner
    from unet_fastai.infer.onnx import export_onnx
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

def _geotiff(path, img, **kw):
    "`img` (H,W,3) as a tiled GeoTIFF in Massachusetts State Plane (EPSG:26986), 1 m pixels"
    import rasterio
    from rasterio.transform import from_origin
    with rasterio.open(path, 'w', driver='GTiff', height=img.shape[0], width=img.shape[1], count=3, dtype='uint8',
                       crs='EPSG:26986', transform=from_origin(231000, 901500, 1, 1), tiled=True, **kw) as ds:
        ds.write(np.moveaxis(img, -1, 0))
    return path

def test_geotiff_real_scene(model, tmp_path):
    "A real scene as a GeoTIFF: georeferenced outputs, the same classes as the PNG path, white as no-data, metrics without it"
    import rasterio
    sat, roads = shared('mass_roads')/'train'/'sat', shared('mass_roads')/'train'/'map'
    img = np.asarray(Image.open(sat/'21628930_15.png').convert('RGB')).copy()
    img[:, :200] = 255  # a white border, as Massachusetts scenes have where the imagery ends
    (tmp_path/'in').mkdir(); (tmp_path/'masks').mkdir()
    _geotiff(tmp_path/'in'/'s.tif', img)
    Image.fromarray(img).save(tmp_path/'s.png')
    Image.open(roads/'21628930_15.png').save(tmp_path/'masks'/'s.png')
    r = run(command('unet_fastai_predict'), model, tmp_path/'in', '--out', tmp_path/'geo', '--probs', '--vector', '--nodata', '255')
    assert r.returncode == 0, r.stderr[-3000:]
    r = run(command('unet_fastai_predict'), model, tmp_path/'s.png', '--out', tmp_path/'png')
    assert r.returncode == 0, r.stderr[-3000:]
    with rasterio.open(tmp_path/'in'/'s.tif') as src, rasterio.open(tmp_path/'geo'/'s_mask.tif') as m, rasterio.open(tmp_path/'geo'/'s_probs.tif') as p:
        assert (m.crs, m.transform, m.shape, m.count) == (src.crs, src.transform, src.shape, 1)
        assert (p.crs, p.transform, p.count) == (src.crs, src.transform, 2)
        assert m.tags(ns='IMAGE_STRUCTURE')['LAYOUT'] == 'COG' and m.overviews(1)
        mask, prob_valid = m.read(1), p.read_masks(1)
    png = np.asarray(Image.open(tmp_path/'png'/'s_mask.png'))
    assert (mask[:, :200] == 255).all() and not prob_valid[:, :200].any()
    imagery = (img != 255).any(-1)  # the border, and the scene's own white no-data areas
    assert ((mask == 255) == ~imagery).all() and ((prob_valid > 0) == imagery).all()
    assert (mask[imagery] == png[imagery]).all()  # streamed GeoTIFF = in-memory PNG path, wherever there is imagery
    assert json.loads((tmp_path/'geo'/'s_mask.geojson').read_text())['crs']['properties']['name'].endswith('26986')
    r = run(command('unet_fastai_evaluate'), model, '--images', tmp_path/'in', '--masks', tmp_path/'masks', '--nodata', '255',
            '--json', tmp_path/'r.json')
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path/'r.json').read_text())['pixels'] == imagery.sum() < 1500 * 1300

def test_geotiff_bad_inputs(model, tmp_path):
    "A truncated GeoTIFF, a band that is not there (by number or name): one error line that names the file or the option"
    good = _geotiff(tmp_path/'good.tif', np.full((300, 300, 3), 90, np.uint8))
    (tmp_path/'cut.tif').write_bytes(good.read_bytes()[:5000])
    r = run(command('unet_fastai_predict'), model, tmp_path/'cut.tif', '--out', tmp_path/'o')
    assert r.returncode == 1 and 'Traceback' not in r.stderr
    errors = [l for l in r.stderr.splitlines() if l.startswith('error: ')]
    assert len(errors) == 1 and errors[0].startswith(f"error: {tmp_path/'cut.tif'}: cannot be decoded") and 're-download' in errors[0]
    r = run(command('unet_fastai_predict'), model, good, '--out', tmp_path/'o', '--bands', '1,2,5')
    assert r.returncode == 1 and f"{good}: band 5 does not exist: the scene has 3 band(s)" in r.stderr
    r = run(command('unet_fastai_predict'), model, good, '--out', tmp_path/'o', '--bands', 'rgb')
    assert r.returncode == 1 and f"{good}: no band named 'rgb'; its bands have no names: give band numbers from 1" in r.stderr
    assert not (tmp_path/'o').exists() or not any((tmp_path/'o').iterdir())

def test_cli_checks_files_before_loading(model, tmp_path):
    "A wrong path or a bad input fails in well under 2 s: before torch, fastai and the model load"
    (tmp_path/'bad.tif').write_bytes(b'II*\x00' + np.random.default_rng(0).bytes(5000))
    (tmp_path/'in').mkdir(); (tmp_path/'in'/'m.png').write_bytes(b'')
    cases = [(('unet_fastai_predict', tmp_path/'nope.pkl', tmp_path/'bad.tif'), 'nope.pkl: model file not found'),
             (('unet_fastai_predict', model, tmp_path/'bad.tif'), 'bad.tif: cannot be decoded: the file is corrupt'),
             (('unet_fastai_predict', tmp_path/'bad.tif', tmp_path/'bad.tif'), 'not a model exported by fastai'),
             (('unet_fastai_evaluate', tmp_path/'nope.pkl', '--images', tmp_path/'in', '--masks', tmp_path/'in'), 'model file not found'),
             (('unet_fastai_app', tmp_path/'nope.pkl'), 'model file not found')]
    for (cmd, *args), msg in cases:
        t = time.perf_counter()
        r = run(command(cmd), *args)
        took = time.perf_counter() - t
        assert r.returncode == 1 and r.stderr.count('\n') == 1 and msg in r.stderr, r.stderr
        assert took < 2, f"{cmd}: {took:.1f} s"

def test_pickle_note_once(model, tmp_path):
    "fastai's 3-line pickle warning on every load becomes one line, once per user, saying what it means"
    env = {**os.environ, 'XDG_CACHE_HOME': str(tmp_path/'cache')}
    img = tmp_path/'a.png'
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(img)
    errs = [subprocess.run([command('unet_fastai_predict'), model, img, '--out', tmp_path/'o'], capture_output=True, text=True,
                           env=env).stderr for _ in range(2)]
    assert [e.count('load only models you trust') for e in errs] == [1, 0], errs
    assert not any('insecure pickle' in e for e in errs)

PILLOW_LIMIT = ("import sys, runpy, PIL.Image; PIL.Image.MAX_IMAGE_PIXELS = 1000; sys.argv = sys.argv[1:]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')")  # a command with Pillow's decompression-bomb limit at 1000 px

def test_png_over_pillows_limit_is_prepared_and_predicted(model, tmp_path):
    "PNG scenes are read by libvips: one over Pillow's limit (lowered here, so that a 1500² scene is over it) is no 'corrupt' file"
    write_scenes(tmp_path/'scenes', n=2, size=1500)
    for p in sorted((tmp_path/'scenes').glob('*/*.tif')): Image.open(p).save(p.with_suffix('.png')); p.unlink()
    r = run(sys.executable, '-c', PILLOW_LIMIT, command('unet_fastai_prepare'), tmp_path/'scenes', tmp_path/'prep', '--workers', '2')
    assert r.returncode == 0 and 'corrupt' not in r.stderr, r.stderr[-2000:]
    assert len(list((tmp_path/'prep'/'tiles'/'images').glob('*.png'))) == 2 * 16
    r = run(sys.executable, '-c', PILLOW_LIMIT, command('unet_fastai_predict'), model, tmp_path/'scenes'/'sat', '--out', tmp_path/'pred')
    assert r.returncode == 0 and 'corrupt' not in r.stderr, r.stderr[-2000:]
    assert np.asarray(Image.open(tmp_path/'pred'/'scene_000_mask.png')).shape == (1500, 1500)
