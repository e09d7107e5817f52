"Where the model is wrong, through the command line: suggest (what to label next) and audit (which labels to doubt) on GeoTIFF scenes"
import json, os, subprocess
import numpy as np, pytest
from conftest import BIN, command
from unet_fastai.data.synthetic import make_scene, write_scenes
from unet_fastai.data.prepare import prepare
from unet_fastai.train.loop import train_roads

TORCHRUN = (BIN/'torchrun', '--standalone', '--nproc_per_node', 2, '--no-python')

def run(*args, tmp):
    return subprocess.run([*map(str, args)], capture_output=True, text=True, timeout=900, env={**os.environ, 'TMPDIR': str(tmp)})

@pytest.fixture(scope='module')
def area(tmp_path_factory):
    "A road model trained briefly on generated tiles; 3 GeoTIFF scenes (EPSG:26986) with road masks and the roads as polygons in EPSG:4326"
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.features import shapes
    from rasterio.warp import transform_geom
    d = tmp_path_factory.mktemp('doubt')
    write_scenes(d/'gen', n=4, size=512)
    prepare(d/'gen', d/'prep', size=256, tile=128, workers=0, progress=False)
    train_roads(d/'prep', bs=4, epochs=2, freeze_epochs=0, lr=5e-3, pretrained=False, out=d/'model', train_seed=0)
    for k in ('scenes', 'masks'): (d/k).mkdir()
    feats = []
    for i in range(3):
        img, msk = make_scene(500 + i, size=384)
        prof = dict(driver='GTiff', width=384, height=384, dtype='uint8', crs='EPSG:26986', transform=from_origin(230000 + 500 * i, 900000, 1, 1))
        with rasterio.open(d/'scenes'/f's{i}.tif', 'w', count=3, **prof) as o: o.write(np.moveaxis(img, -1, 0))
        with rasterio.open(d/'masks'/f's{i}.tif', 'w', count=1, **prof) as o: o.write(msk[None])
        feats += [{'type': 'Feature', 'properties': {'scene': i}, 'geometry': transform_geom('EPSG:26986', 'EPSG:4326', g)}
                  for g, v in shapes(msk, mask=msk > 0, transform=prof['transform'])]
    (d/'roads.geojson').write_text(json.dumps({'type': 'FeatureCollection', 'features': feats}))
    return d

def layer(path, name):
    "(CRS, fields by name, geometries) of a GeoPackage layer"
    import pyogrio, shapely
    meta, _, wkb, vals = pyogrio.raw.read(path, layer=name)
    return meta['crs'], dict(zip(meta['fields'], vals)), shapely.from_wkb(wkb)

def test_suggest(area, tmp_path):
    model = area/'model'/'model.pkl'
    one = run(command('unet_fastai_suggest'), model, area/'scenes', '--count', 5, '--out', tmp_path/'todo.gpkg', tmp=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    assert one.stdout.splitlines()[-1].startswith('5 windows to label, of ')
    crs, f, geoms = layer(tmp_path/'todo.gpkg', 'todo')
    assert crs == 'EPSG:26986' and f['rank'].tolist() == [1, 2, 3, 4, 5] and f['score'][0] == f['score'].max()  # the most unsure first
    assert all(g.area > 0 for g in geoms) and all(s.endswith('.tif') for s in f['scene'])
    two = run(*TORCHRUN, command('unet_fastai_suggest'), model, area/'scenes', '--count', 5, '--out', tmp_path/'two.gpkg', tmp=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count('windows to label') == 1  # the main process writes and says it
    _, f2, g2 = layer(tmp_path/'two.gpkg', 'todo')
    assert f2['scene'].tolist() == f['scene'].tolist() and all(a.equals(b) for a, b in zip(geoms, g2))  # whichever process read a scene
    none = run(command('unet_fastai', ), 'suggest', model, area/'scenes', '--exclude', area/'masks', '--out', tmp_path/'none.gpkg', tmp=tmp_path)
    assert none.returncode == 0 and '0 windows to label, of 0 unlabelled' in none.stdout, none.stderr[-2000:]  # every scene has a mask

def test_suggest_bad_input(area, tmp_path):
    model = area/'model'/'model.pkl'
    for args, said in (((area/'scenes', '--out', tmp_path/'todo.shp'), 'todo.shp: write a GeoPackage (.gpkg) or a CSV (.csv)'),
                       ((area/'scenes', '--exclude', tmp_path/'nope'), 'nope: not found (--exclude'),
                       ((area/'scenes', '--count', 0), '--count 0'),
                       ((tmp_path/'empty',), 'no images found'),
                       ((area/'gen'/'sat', '--out', tmp_path/'t.gpkg'), 't.gpkg: some scenes have no CRS')):
        (tmp_path/'empty').mkdir(exist_ok=True)
        r = run(command('unet_fastai_suggest'), model, *args, tmp=tmp_path)
        assert r.returncode == 1 and r.stderr.count('\n') == 1 and said in r.stderr, (args, r.stderr[-2000:])
    assert not list(tmp_path.glob('*.gpkg'))
    r = run(command('unet_fastai_suggest'), model, area/'gen'/'sat', '--count', 3, '--out', tmp_path/'photos.csv', tmp=tmp_path)
    rows = (tmp_path/'photos.csv').read_text().splitlines()
    assert r.returncode == 0 and len(rows) == 4 and rows[1].startswith('1,'), r.stderr[-2000:]  # images without a CRS: a CSV

def test_audit(area, tmp_path):
    model = area/'model'/'model.pkl'
    r = run(command('unet_fastai_audit'), model, '--images', area/'scenes', '--labels', area/'roads.geojson', '--confidence', 0.6,
            '--out', tmp_path/'audit.gpkg', tmp=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'regions in doubt in 3 scenes' in r.stdout and (tmp_path/'audit.png').stat().st_size > 1000
    crs, f, geoms = layer(tmp_path/'audit.gpkg', 'doubts')
    assert crs == 'EPSG:26986' and f['rank'].tolist() == list(range(1, len(f['rank']) + 1))
    assert set(f['kind']) <= {'unlabelled', 'not there', 'other class'}
    _, ff, fg = layer(tmp_path/'audit.gpkg', 'features')
    n = len(json.loads((area/'roads.geojson').read_text())['features'])
    assert sorted(ff['feature'].tolist()) == list(range(n)) and ((0 <= ff['share_in_doubt']) & (ff['share_in_doubt'] <= 1)).all()
    assert list(ff['share_in_doubt']) == sorted(ff['share_in_doubt'], reverse=True)  # the most doubted first
    m = run(command('unet_fastai'), 'audit', model, '--images', area/'scenes', '--masks', area/'masks', '--out', tmp_path/'m.csv', tmp=tmp_path)
    assert m.returncode == 0 and (tmp_path/'m.csv').read_text().startswith('rank,kind,score'), m.stderr[-2000:]

def test_audit_bad_input(area, tmp_path):
    model = area/'model'/'model.pkl'
    for args, said in ((('--images', area/'scenes', '--masks', area/'masks', '--confidence', 1.5), '--confidence 1.5'),
                       (('--images', area/'scenes'), 'pass --images SCENES and --masks DIR (or --labels FILE)'),
                       (('--images', area/'scenes', '--masks', area/'masks', '--out', tmp_path/'a.txt'), 'a.txt: write a GeoPackage')):
        r = run(command('unet_fastai_audit'), model, *args, tmp=tmp_path)
        assert r.returncode == 1 and r.stderr.count('\n') == 1 and said in r.stderr, (args, r.stderr[-2000:])
