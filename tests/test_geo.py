"""The GIS path end to end on generated data: scenes in Massachusetts State Plane, road centrelines in longitude/latitude,
a list file and a VRT mosaic of the scenes, training from windows, remote scenes read by HTTP range requests"""
import functools, json, subprocess, threading
from http.server import ThreadingHTTPServer
import numpy as np, pytest
from conftest import command
from unet_fastai.io.raster import Raster
from unet_fastai.io.writers import mosaic_vrt
from unet_fastai.io.labels import vector_labels

X0, Y0, SIDE, BUFFER = 230000., 900000., 512, 4.  # two 512 × 512 m scenes side by side, 1 m a pixel; roads 8 m wide

def run(*args): return subprocess.run([*map(str, args)], capture_output=True, text=True)

def _geotiff(path, arr, x0, **kw):
    import rasterio
    from rasterio.transform import from_origin
    with rasterio.open(path, 'w', driver='GTiff', width=arr.shape[2], height=arr.shape[1], count=arr.shape[0], dtype='uint8',
                       crs='EPSG:26986', transform=from_origin(x0, Y0, 1, 1), tiled=True, compress='deflate', **kw) as d: d.write(arr)
    return path

@pytest.fixture(scope='module')
def county(tmp_path_factory):
    "Two GeoTIFF scenes (the first with a no-data corner), their road centrelines as EPSG:4326 GeoJSON, a list file and a VRT"
    import pyproj, shapely
    from rasterio.features import rasterize
    from rasterio.transform import from_origin
    d = tmp_path_factory.mktemp('county')
    lines = [[(X0 - 20, Y0 - 60), (X0 + 500, Y0 - 300), (X0 + 1050, Y0 - 200)], [(X0 + 300, Y0 + 10), (X0 + 340, Y0 - 530)],
             [(X0 + 700, Y0 + 10), (X0 + 820, Y0 - 530)], [(X0 - 10, Y0 - 450), (X0 + 1040, Y0 - 470)]]
    ll = pyproj.Transformer.from_crs('EPSG:26986', 'EPSG:4326', always_xy=True)
    (d/'roads.geojson').write_text(json.dumps({'type': 'FeatureCollection', 'features': [
        {'type': 'Feature', 'properties': {'highway': 'residential'}, 'geometry': {'type': 'LineString', 'coordinates': [ll.transform(*p) for p in l]}}
        for l in lines]}))
    roads = [shapely.LineString(l).buffer(BUFFER) for l in lines]
    rng, scenes = np.random.default_rng(0), []
    for i in range(2):
        x0 = X0 + i * SIDE
        road = rasterize(roads, out_shape=(SIDE, SIDE), transform=from_origin(x0, Y0, 1, 1)).astype(bool)
        img = np.stack([rng.normal(v, 12, (SIDE, SIDE)) for v in (70, 95, 60)]).clip(1, 255).astype(np.uint8)
        img[:, road] = 150
        if i == 0: img[:, :80, :80] = 0  # no imagery there
        scenes.append(_geotiff(d/f'scene{i}.tif', img, x0, nodata=0))
    (d/'scenes.txt').write_text('# the county\nscene0.tif\nscene1.tif\n')
    mosaic_vrt(scenes, d/'county.vrt')
    return d

@pytest.fixture(scope='module')
def model(county):
    "A U-Net trained from windows of the listed scenes, labels burned from the GeoJSON: the `scenes` task's command line"
    out = county/'model'
    r = run(command('unet_fastai_train'), 'scenes', county/'scenes.txt', '--labels', county/'roads.geojson', '--buffer', BUFFER,
            '--size', 64, '--windows-per-epoch', 96, '--bs', 8, '--epochs', 3, '--lr', 3e-3, '--pretrained', 'false', '--out', out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out

def test_window_training_writes_no_tile(county, model):
    import pandas as pd
    assert len(pd.read_csv(model/'history.csv')) == 3
    assert sorted(p.name for p in county.rglob('*') if p.suffix in ('.png', '.tif')) == [
        'curves.png', 'predictions.png', 'reliability.png', 'samples.png', 'scene0.tif', 'scene1.tif']  # pictures; no tile, no mask
    config = json.loads((model/'config.json').read_text())
    assert config['labels'].endswith('roads.geojson') and config['windows_per_epoch'] == 96

def test_predict_mosaic_and_evaluate_with_labels(county, model, tmp_path):
    import rasterio
    r = run(command('unet_fastai_predict'), model/'model.pkl', county/'county.vrt', '--out', tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    with rasterio.open(tmp_path/'county_mask.tif') as m:
        assert (m.width, m.height, m.crs.to_epsg(), m.transform.c, m.transform.f) == (2 * SIDE, SIDE, 26986, X0, Y0)
        mask = m.read(1)
    assert (mask[:80, :80] == 255).all() and (mask[80:] != 255).all()  # the no-data corner stays void
    with Raster(county/'county.vrt') as s: truth = vector_labels(county/'roads.geojson', buffer=BUFFER).for_scene(s).read()[..., 0]
    iou = ((mask == 1) & (truth == 1)).sum() / ((mask == 1) | (truth == 1)).sum()
    assert iou > 0.5, iou  # learnt from 3 epochs of windows: roads are found
    r = run(command('unet_fastai_evaluate'), model/'model.pkl', '--images', county/'scenes.txt', '--labels', county/'roads.geojson',
            '--buffer', BUFFER, '--json', tmp_path/'r.json')
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path/'r.json').read_text())
    assert res['scenes'] == 2 and res['pixels'] == 2 * SIDE * SIDE - 80 * 80 and res['iou']['foreground'] > 0.5

def test_prepare_from_vrt_with_labels(county, tmp_path):
    from PIL import Image
    r = run(command('unet_fastai_prepare'), county/'county.vrt', tmp_path, '--labels', county/'roads.geojson', '--buffer', BUFFER,
            '--size', 0, '--tile', 128, '--workers', 1)
    assert r.returncode == 0, r.stderr[-3000:]
    m = np.asarray(Image.open(tmp_path/'png'/'masks'/'county.png'))
    with Raster(county/'county.vrt') as s: truth = vector_labels(county/'roads.geojson', buffer=BUFFER).for_scene(s).read()[..., 0]
    truth[:80, :80] = 255
    assert (m == truth).all()
    assert len(list((tmp_path/'tiles'/'masks').glob('county_*.png'))) == 4 * 8 - 0  # the corner tile has imagery too

def test_bad_label_inputs(county, tmp_path):
    far = tmp_path/'far.geojson'
    far.write_text(json.dumps({'type': 'FeatureCollection', 'features': [{'type': 'Feature', 'properties': {}, 'geometry': {'type': 'Point', 'coordinates': [2.35, 48.85]}}]}))
    for args, said in (((county/'scene0.tif',), 'scene0.tif: not a vector file GDAL/OGR can read'),
                       ((county/'roads.geojson', '--label-field', 'class'), "no attribute 'class'; its attributes are highway"),
                       ((far,), 'far.geojson: none of its 1 features falls on the scenes; check that its CRS (EPSG:4326) is right'),
                       ((tmp_path/'none.gpkg',), 'none.gpkg: label file not found')):
        r = run(command('unet_fastai_prepare'), county/'scenes.txt', tmp_path/'out', '--labels', *args)
        errors = [l for l in r.stderr.splitlines() if l.startswith('error: ')]
        assert r.returncode == 1 and len(errors) == 1 and said in errors[0] and 'Traceback' not in r.stderr, r.stderr[-2000:]
        assert not (tmp_path/'out').exists()

# Remote scenes: a loopback HTTP server that honours Range requests (rangehttpserver), counting the bytes it sends

@pytest.fixture(scope='module')
def server(county):
    from RangeHTTPServer import RangeRequestHandler
    sent = {'bytes': 0}
    class Counting(RangeRequestHandler):
        def log_message(self, *a): pass
        def copyfile(self, source, out):
            class Counted:
                def write(_, b): sent['bytes'] += len(b); return out.write(b)
            super().copyfile(source, Counted())
    srv = ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Counting, directory=str(county)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}', sent
    srv.shutdown()

def test_remote_scene_predicts_as_local_by_ranges(county, model, server, tmp_path):
    import rasterio
    url, sent = server
    size = (county/'scene1.tif').stat().st_size
    sent['bytes'] = 0
    r = run(command('unet_fastai_predict'), model/'model.pkl', f'{url}/scene1.tif', '--out', tmp_path/'remote')
    assert r.returncode == 0, r.stderr[-3000:]
    assert sent['bytes'] <= 1.1 * size + 65536, (sent['bytes'], size)  # about the file once, never more
    r = run(command('unet_fastai_predict'), model/'model.pkl', county/'scene1.tif', '--out', tmp_path/'local')
    assert r.returncode == 0, r.stderr[-3000:]
    with rasterio.open(tmp_path/'remote'/'scene1_mask.tif') as a, rasterio.open(tmp_path/'local'/'scene1_mask.tif') as b:
        assert (a.read() == b.read()).all() and a.crs == b.crs and a.transform == b.transform

def test_remote_window_reads_a_part(county, server):
    rng = np.random.default_rng(1)
    _geotiff(county/'big.tif', rng.integers(0, 255, (3, 2048, 2048), dtype=np.uint8), X0, blockxsize=256, blockysize=256)
    url, sent = server
    sent['bytes'] = 0
    with Raster(f'{url}/big.tif') as r:
        a = r.read(slice(300, 428), slice(600, 728))
    with Raster(county/'big.tif') as l: assert (a == l.read(slice(300, 428), slice(600, 728))).all()
    assert sent['bytes'] < 0.05 * (county/'big.tif').stat().st_size, sent['bytes']  # 4 of 64 blocks, and the header
    (county/'big.tif').unlink()

def test_remote_errors_are_one_line(model, server, tmp_path):
    url, _ = server
    for src, said in ((f'{url}/nope.tif', f'{url}/nope.tif: cannot be read (HTTP response code: 404)'),
                      ('http://127.0.0.1:1/scene.tif', 'http://127.0.0.1:1/scene.tif: cannot be read (CURL error'),
                      (f'{url}/scenes.txt', f'{url}/scenes.txt: cannot be read (')):
        r = run(command('unet_fastai_predict'), model/'model.pkl', src, '--out', tmp_path)
        errors = [l for l in r.stderr.splitlines() if l.startswith('error: ')]
        assert r.returncode == 1 and len(errors) == 1 and said in errors[0] and 'Traceback' not in r.stderr, r.stderr[-2000:]

# STAC in: a static catalog of the scenes, each band a COG of its own (STAC 1.1 `bands` with common names), one item with
# a `visual` asset too; served over HTTP and read by ranges; broken items are one line

NAMES = ('red', 'green', 'blue', 'nir')

def _nir(img): return (255 - img[1]).clip(1, 255).astype(np.uint8)  # a band no RGB model has seen, to check the order by

@pytest.fixture(scope='module')
def catalog(county):
    import rasterio, pystac
    root = pystac.Catalog('county', 'the county, a COG per band')
    for i in range(2):
        with rasterio.open(county/f'scene{i}.tif') as s: img, x0 = s.read(), s.transform.c
        d = county/'stac'/f'scene{i}'
        d.mkdir(parents=True)
        item = pystac.Item(f'scene{i}', None, None, __import__('datetime').datetime(2026, 6, 1), {'proj:code': 'EPSG:26986'})
        for name, band in zip(NAMES, [*img, _nir(img)]):
            _geotiff(d/f'{name}.tif', band[None], x0, nodata=0)
            item.add_asset(name, pystac.Asset(f'./{name}.tif', media_type=pystac.MediaType.COG, roles=['data'],
                                              extra_fields={'bands': [{'name': name.upper(), 'eo:common_name': name, 'nodata': 0}]}))
        if i == 1: item.add_asset('visual', pystac.Asset('../../scene1.tif', media_type=pystac.MediaType.GEOTIFF, roles=['visual']))
        root.add_item(item)
    root.normalize_hrefs(str(county/'stac'))
    root.save(pystac.CatalogType.SELF_CONTAINED)
    return county/'stac'

def test_stac_catalog_predicts_by_ranges(county, catalog, model, server, tmp_path):
    import rasterio, pystac
    from unet_fastai.io.stac import stac_scenes
    url, sent = server
    with Raster(stac_scenes(f'{url}/stac/catalog.json', bands=['nir', 'red'], folder=tmp_path/'vrt')[1], bands=['nir', 'red']) as r, \
         rasterio.open(county/'scene1.tif') as s:
        img = s.read()
        assert (np.moveaxis(r.read(), -1, 0) == np.stack([_nir(img), img[0]])).all()  # bands in the order named, each from its COG
    files = sum(p.stat().st_size for p in catalog.rglob('*.tif') if p.stem in NAMES[:3])
    sent['bytes'] = 0
    r = run(command('unet_fastai_predict'), model/'model.pkl', f'{url}/stac/catalog.json', '--bands', 'red,green,blue', '--out', tmp_path/'bands')
    assert r.returncode == 0, r.stderr[-3000:]
    assert sent['bytes'] <= 1.1 * files + 6 * 65536, (sent['bytes'], files)  # about the band files once
    r = run(command('unet_fastai_predict'), model/'model.pkl', f'{url}/stac/scene1/scene1.json', '--out', tmp_path/'visual')  # its visual asset
    assert r.returncode == 0, r.stderr[-3000:]
    r = run(command('unet_fastai_predict'), model/'model.pkl', county/'scene1.tif', '--out', tmp_path/'local')
    assert r.returncode == 0, r.stderr[-3000:]
    with rasterio.open(tmp_path/'local'/'scene1_mask.tif') as a:
        for out in ('bands', 'visual'):
            with rasterio.open(tmp_path/out/'scene1_mask.tif') as b: assert (a.read() == b.read()).all() and a.transform == b.transform, out
    coll = pystac.Collection.from_file(str(tmp_path/'bands'/'collection.json'))
    links = {i.id: [l.href for l in i.links if l.rel == 'derived_from'] for i in coll.get_items()}
    assert links == {f'scene{i}': [f'{url}/stac/scene{i}/scene{i}.json'] for i in range(2)}, links  # each prediction links to its item
    from pystac.validation import validate_dict  # the core STAC schemas pystac ships (extension schemas would be fetched)
    for f in ['collection.json', 'scene0_item.json', 'scene1_item.json']:
        assert validate_dict({**json.loads((tmp_path/'bands'/f).read_text()), 'stac_extensions': []}), f

def test_stac_catalog_trains_from_windows(county, catalog, server, tmp_path):
    url, sent = server
    sent['bytes'] = 0
    r = run(command('unet_fastai_train'), 'scenes', f'{url}/stac/catalog.json', '--bands', 'red,green,blue,nir', '--labels', county/'roads.geojson',
            '--buffer', BUFFER, '--size', 64, '--windows-per-epoch', 16, '--bs', 8, '--epochs', 1, '--lr', 3e-3, '--pretrained', 'false',
            '--out', tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    files = sum(p.stat().st_size for p in catalog.rglob('*.tif') if p.stem in NAMES)
    assert sent['bytes'] <= 1.5 * files, (sent['bytes'], files)  # windows, a grid and overviews of small scenes: about each file once (1.00x)
    from unet_fastai.infer.loading import load_model
    from unet_fastai.spec import model_spec
    spec = model_spec(load_model(tmp_path/'model.pkl'))
    assert (spec.bands, spec.n_in) == (list(NAMES), 4), spec  # read by name again in any scene that names its bands

def test_broken_stac_items_are_one_line(county, catalog, model, tmp_path):
    import shutil, tifffile
    d = tmp_path/'broken'
    shutil.copytree(catalog, d)
    item = json.loads((d/'scene0'/'scene0.json').read_text())
    tifffile.imwrite(d/'scene0'/'plain.tif', np.zeros((8, 8), np.uint8))
    def broken(name, **assets):
        (d/f'{name}.json').write_text(json.dumps({**item, 'id': name, 'links': [], 'properties': {'datetime': '2026-06-01T00:00:00Z'},
                                                  'assets': {k: {'href': v, 'type': 'image/tiff'} for k, v in assets.items()}}))
        return d/f'{name}.json'
    for args, said in (((d/'catalog.json', '--asset', 'swir16'), "(item scene0): no asset 'swir16'; its assets are red, green, blue, nir"),
                       ((d/'catalog.json', '--bands', 'red,swir16'), "(item scene0): no band named 'swir16' in its image assets"),
                       ((d/'catalog.json',), "(item scene0): 4 image assets (red, green, blue, nir); choose one with --asset KEY"),
                       ((broken('gone', data=str(d/'gone.tif')),), f"gone.json (item gone): asset 'data' ({d/'gone.tif'}) cannot be read ("),
                       ((broken('flat', data='./scene0/plain.tif'),), "flat.json (item flat): asset 'data' is not georeferenced and the item has no proj: code"),
                       ((d/'none.json',), 'none.json: cannot be read as STAC JSON (')):
        r = run(command('unet_fastai_predict'), model/'model.pkl', *args, '--out', tmp_path/'out')
        errors = [l for l in r.stderr.splitlines() if l.startswith('error: ')]
        assert r.returncode == 1 and len(errors) == 1 and said in errors[0] and 'Traceback' not in r.stderr, (said, r.stderr[-2000:])
