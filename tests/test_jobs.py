"Prediction at scale: predict_scenes and evaluate_model under torchrun (2 CPU processes) share the scenes, a killed run resumes"
import json, os, subprocess, time
import numpy as np, pytest
from conftest import ROOT, BIN, command
from unet_fastai.data.synthetic import make_scene, write_scenes
from unet_fastai.data.prepare import prepare
from unet_fastai.train.loop import train_roads

SIZES = [(700, 500), (600, 600), (400, 900), (300, 300), (800, 450)]  # (h, w) of 5 scenes, of different sizes

def run(*args, tmp, env=None, **kw):
    return subprocess.run([*map(str, args)], capture_output=True, text=True, timeout=900, env={**os.environ, 'TMPDIR': str(tmp), **(env or {})}, **kw)

@pytest.fixture(scope='module')
def county(tmp_path_factory):
    "A briefly trained road model, and 5 GeoTIFF scenes of different sizes (EPSG:26986) with road masks"
    import rasterio
    from rasterio.transform import from_origin
    d = tmp_path_factory.mktemp('jobs')
    write_scenes(d/'gen', n=3, size=512)
    prepare(d/'gen', d/'prep', size=256, tile=128, workers=0, progress=False)
    train_roads(d/'prep', bs=4, epochs=1, freeze_epochs=0, lr=5e-3, pretrained=False, out=d/'model')
    for k in ('scenes', 'masks'): (d/k).mkdir()
    for i, (h, w) in enumerate(SIZES):
        img, msk = make_scene(300 + i, size=max(h, w))
        prof = dict(driver='GTiff', width=w, height=h, dtype='uint8', crs='EPSG:26986', transform=from_origin(230000 + 1000 * i, 900000, 1, 1))
        with rasterio.open(d/'scenes'/f's{i}.tif', 'w', count=3, **prof) as o: o.write(np.moveaxis(img[:h, :w], -1, 0))
        with rasterio.open(d/'masks'/f's{i}.tif', 'w', count=1, **prof) as o: o.write(msk[None, :h, :w])
    return d

def outputs(folder)->dict:
    "The bytes of every visible output in `folder`, by name"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith('.')}

def predict(county, out, *launcher, extra=(), tmp):
    return run(*launcher, command('unet_fastai_predict'), county/'model'/'model.pkl', county/'scenes', '--out', out, '--probs', '--vector',
               '--uncertainty', *extra, tmp=tmp)

TORCHRUN = (BIN/'torchrun', '--standalone', '--nproc_per_node', 2, '--no-python')

def test_two_processes_share_the_scenes(county, tmp_path):
    one = predict(county, tmp_path/'one', tmp=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = predict(county, tmp_path/'two', *TORCHRUN, tmp=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count('5 scenes predicted, 0 already done') == 1 and 'by 2 processes' in two.stdout  # one process reports
    a, b = outputs(tmp_path/'one'), outputs(tmp_path/'two')
    assert sorted(a) == sorted(b) == sorted(['collection.json', 'mosaic.vrt', 'mosaic_probs.vrt', 'mosaic_uncertainty.vrt', 'polygons.geojson'] + [
        f's{i}_{k}' for i in range(5) for k in ('item.json', 'mask.tif', 'mask.tif.aux.xml', 'probs.tif', 'mask.geojson', 'uncertainty.tif')])
    for name in a:
        if name.endswith(('.vrt', '.json')): continue  # they name their folder's files (and the STAC items when they were made)
        assert a[name] == b[name], name  # the same bytes, whichever process predicted a scene
    import pystac
    assert sorted(i.id for i in pystac.Collection.from_file(str(tmp_path/'two'/'collection.json')).get_items()) == [f's{i}' for i in range(5)]
    import rasterio
    with rasterio.open(tmp_path/'two'/'mosaic.vrt') as v:
        assert (v.width, v.height) == (4000 + 450, 800) and v.crs.to_epsg() == 26986  # every scene in one layer

def test_evaluate_two_processes_sums_the_counts(county, tmp_path):
    args = (command('unet_fastai_evaluate'), county/'model'/'model.pkl', '--images', county/'scenes', '--masks', county/'masks')
    one = run(*args, '--json', tmp_path/'one.json', tmp=tmp_path)
    two = run(*TORCHRUN, *args, '--json', tmp_path/'two.json', tmp=tmp_path)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    r1, r2 = (json.loads((tmp_path/f).read_text()) for f in ('one.json', 'two.json'))
    assert r1['pixels'] == r2['pixels'] == sum(h * w for h, w in SIZES) and r2['scenes'] == 5
    for k in ('accuracy', 'mIoU', 'relaxed_breakeven'): assert abs(r1[k] - r2[k]) < 1e-9, k
    assert two.stdout.count('mean IoU') == 1

def test_killed_run_resumes(county, tmp_path):
    out = tmp_path/'out'
    p = subprocess.Popen([*map(str, TORCHRUN), command('unet_fastai_predict'), county/'model'/'model.pkl', county/'scenes', '--out', out,
                          '--probs', '--uncertainty'], env={**os.environ, 'TMPDIR': str(tmp_path)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = time.time()
    while time.time() - t < 300 and len(list((out/'.predicted').glob('*.json')) if (out/'.predicted').is_dir() else []) < 2: time.sleep(0.05)
    subprocess.run(['pkill', '-KILL', '-f', str(out)])  # every process of the job at once: torchrun's workers have sessions of their own
    p.wait()
    t = time.time()
    while subprocess.run(['pgrep', '-f', str(out)], capture_output=True).returncode == 0 and time.time() - t < 30: time.sleep(0.05)
    done = {m.stem for m in (out/'.predicted').glob('*.json')}
    assert 2 <= len(done) < 5, done
    kept = {n: (out/n).stat().st_mtime_ns for s in done for n in (f'{s}_mask.tif', f'{s}_probs.tif', f'{s}_uncertainty.tif')}
    r = run(command('unet_fastai_predict'), county/'model'/'model.pkl', county/'scenes', '--out', out, '--probs', '--uncertainty', tmp=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f'{5 - len(done)} scenes predicted, {len(done)} already done' in r.stdout
    assert {n: (out/n).stat().st_mtime_ns for n in kept} == kept  # none redone
    assert not list(out.rglob('*.tmp'))  # the killed run's temporaries are gone
    ref = predict(county, tmp_path/'ref', tmp=tmp_path, extra=())
    assert ref.returncode == 0
    a, b = outputs(out), outputs(tmp_path/'ref')
    for name in (f's{i}_{k}' for i in range(5) for k in ('mask.tif', 'probs.tif', 'uncertainty.tif')): assert a[name] == b[name], name
