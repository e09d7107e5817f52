import os, sys
from pathlib import Path
import pytest

if os.environ.get('PYTEST_XDIST_WORKER'):  # one of pytest-xdist's workers (pyproject: -n 2): a core each, and the processes it starts too;
    os.environ['OMP_NUM_THREADS'] = os.environ['MKL_NUM_THREADS'] = '1'  # two torch processes of 2 threads on 2 cores slow each other 5-10×

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent/'shared'/'data'
BIN = Path(sys.executable).parent

def shared(name):
    "Path of a shared data set, or skip the test when ../shared is absent"
    p = SHARED/name
    if not p.is_dir(): pytest.skip(f"{p} not found (../shared is absent)")
    return p

def command(name):
    "Path of one of the package's console scripts in this environment"
    p = BIN/name
    if not p.exists(): pytest.fail(f"{p} missing: install the package with pip install -e .")
    return str(p)

@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items):
    "The tests of a file share its module fixtures (trained models, tiles): one xdist worker runs them all; each notebook is a test of its own"
    for item in items:
        if item.module.__name__ != 'test_notebooks': item.add_marker(pytest.mark.xdist_group(item.module.__name__))

@pytest.fixture(autouse=True, scope='session')
def cache_home(tmp_path_factory):
    "What the package keeps in the user's cache (the note that a model.pkl is code, shown once) goes to a scratch folder"
    import os
    os.environ['XDG_CACHE_HOME'] = str(tmp_path_factory.mktemp('cache'))

CHROMIUM, DRIVER = Path('/usr/bin/chromium'), Path('/usr/bin/chromedriver')

@pytest.fixture(scope='session')
def browser(tmp_path_factory):
    "Headless Chromium driven by Selenium (Debian's chromium + chromium-driver, which .ci/run installs as root)"
    webdriver = pytest.importorskip('selenium.webdriver', reason='selenium not installed (a dev requirement)')
    from selenium.webdriver.chrome.service import Service
    if not (CHROMIUM.exists() and DRIVER.exists()):
        pytest.skip(f"{CHROMIUM} or {DRIVER} missing: apt-get install chromium chromium-driver (.ci/run does it as root)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--disable-sync',
              '--disable-background-networking', '--disable-component-update', '--window-size=1280,900',
              f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):  # the machine has no network: nothing to fetch
        opts.add_argument(a)
    d = webdriver.Chrome(options=opts, service=Service(str(DRIVER)))
    yield d
    d.quit()
