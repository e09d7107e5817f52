"Training beyond one process on this CPU: unet_fastai_train under torchrun and accelerate launch (2 gloo processes), a kill and a resume, wrong command lines"
import json, math, os, signal, socket, subprocess, time
import numpy as np, pytest, torch
from conftest import ROOT, BIN, command
from unet_fastai.data.synthetic import write_scenes
from unet_fastai.data.prepare import prepare
from unet_fastai.train.pictures import read_history
from unet_fastai.train.checkpoint import read_checkpoint
@pytest.fixture(scope='module')
def tiles(tmp_path_factory):
    "Road tiles of 3 generated 384×384 scenes, 9 a scene: 18 to train on, 9 to validate (odd: 2 shards need a repeat)"
    d = tmp_path_factory.mktemp('ddp')
    write_scenes(d/'scenes', n=3, size=384, seed=2)
    prepare(d/'scenes', d/'prep', size=384, tile=128, workers=0, progress=False)
    return d/'prep'

COMMON = ('--bs', 2, '--freeze-epochs', 0, '--lr', 2e-3, '--pretrained', 'false', '--train-seed', 0)
OUTPUTS = ['best.pth', 'checkpoint.pth', 'config.json', 'curves.png', 'history.csv', 'model.pkl', 'predictions.png', 'reliability.png', 'samples.png']

def run(*args, tmp, env=None):
    "Run a command with its temporary files (torchrun's logs among them) in the test's own folder `tmp`"
    return subprocess.run([*map(str, args)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, 'TMPDIR': str(tmp), **(env or {})})

def one_process_figures(tiles, out, **kwargs):
    "[valid_loss, dice, mIoU, relaxed_be3] of out/best.pth on the validation tiles, evaluated in this one process"
    from unet_fastai.data.blocks import roads_dls
    from unet_fastai.train.learner import seg_learner
    from unet_fastai.train.checkpoint import load_weights
    learn = seg_learner(roads_dls(tiles, bs=2), pretrained=False, path=out, **kwargs)
    load_weights(learn, out/'best.pth')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two processes (torchrun sets OMP_NUM_THREADS=1): the same float rounding
    try: return learn.validate()
    finally: torch.set_num_threads(threads)

def test_torchrun_two_processes(tiles, tmp_path):
    out, probe = tmp_path/'run', tmp_path/'probe'
    probe.mkdir()
    r = run(BIN/'torchrun', '--standalone', '--nproc_per_node', 2, ROOT/'tests'/'ddp_probe.py', 'roads', tiles, *COMMON,
            '--epochs', 2, '--loss', 'ce', '--class-weights', 'null', '--out', out, tmp=tmp_path, env={'PROBE_DIR': str(probe)})
    assert r.returncode == 0, r.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS  # no temporaries, nothing twice
    h = read_history(out/'history.csv')
    assert list(h.epoch) == [1, 2] and (out/'history.csv').read_text().count('epoch,') == 1  # one writer
    cfg = json.loads((out/'config.json').read_text())
    assert (cfg['processes'], cfg['bs'], cfg['global_bs']) == (2, 2, 4)
    assert r.stdout.count('roads: 2 processes') == 1 and r.stdout.count('best mIoU') == 1  # one process reports
    # each process trained on its own shard of every epoch, and together on every training tile
    from unet_fastai.data.blocks import roads_dls
    train = sorted(str(p) for p in roads_dls(tiles, bs=2).train_ds.items)
    shards = [[json.loads(l) for l in (probe/f'rank{k}.jsonl').read_text().splitlines()] for k in (0, 1)]
    assert len(train) == 18 and len(shards[0]) == len(shards[1]) == 2  # an epoch a line
    for a, b in zip(*shards): assert len(a) == len(b) == 9 and not set(a) & set(b) and sorted(a + b) == train
    # the validation figures are those of the whole validation set, each tile once; the loss too, for a loss that is a
    # mean over pixels (plain cross-entropy: class weights and Dice make a batch's loss depend on the batch)
    best = h.loc[h.mIoU.idxmax(), ['valid_loss', 'dice', 'mIoU', 'relaxed_be3']].to_numpy(float)
    np.testing.assert_allclose(one_process_figures(tiles, out, loss='ce', class_weights=None), best, rtol=0, atol=1e-5)

def test_torchrun_budget(tiles, tmp_path):
    "A time budget on two processes: every process probes, the main one plans, says it once and corrects it for all as they go"
    out = tmp_path/'run'
    r = run(BIN/'torchrun', '--standalone', '--nproc_per_node', 2, '--no-python', BIN/'unet_fastai_train', 'roads', tiles, *COMMON,
            '--budget', '45s', '--out', out, tmp=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS + ['plan.json'])  # no probe file left, one plan
    plan = json.loads((out/'plan.json').read_text())
    assert r.stdout.count('plan for 45 s here') == 1 and plan['machine']['processes'] == 2
    from unet_fastai.train.plan import MARGIN, ROOM
    most = plan['epochs'] + math.ceil(ROOM * plan['epochs'])  # as corrected, alike in both: fewer, or more up to the fit's room
    assert len(read_history(out/'history.csv')) == plan['epochs_run'] <= most and plan['predicted_s'] <= 45 * (1 - MARGIN) + 0.05  # rounded to a tenth

def test_torchrun_window_training(tiles, tmp_path):
    "The scenes task under torchrun: each process trains on its own random windows of the scenes, the two halves of each epoch"
    out, probe = tmp_path/'run', tmp_path/'probe'
    probe.mkdir()
    r = run(BIN/'torchrun', '--standalone', '--nproc_per_node', 2, ROOT/'tests'/'ddp_probe.py', 'scenes', tiles.parent/'scenes', *COMMON,
            '--size', 64, '--windows-per-epoch', 16, '--epochs', 2, '--out', out, tmp=tmp_path, env={'PROBE_DIR': str(probe)})
    assert r.returncode == 0, r.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS and list(read_history(out/'history.csv').epoch) == [1, 2]
    shards = [[json.loads(l) for l in (probe/f'rank{k}.jsonl').read_text().splitlines()] for k in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 2
    for a, b in zip(*shards): assert len(a) == len(b) == 8 and not set(a) & set(b)  # its own windows
    assert not set(shards[0][0]) & set(shards[0][1])  # drawn anew each epoch

def _free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def test_accelerate_two_processes(tiles, tmp_path):
    out = tmp_path/'run'
    r = run(BIN/'accelerate', 'launch', '--multi_gpu', '--num_processes', 2, '--num_machines', 1, '--mixed_precision', 'no',
            '--dynamo_backend', 'no', '--main_process_port', _free_port(), '--no_python', command('unet_fastai_train'),
            'roads', tiles, *COMMON, '--epochs', 1, '--out', out, tmp=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS
    assert json.loads((out/'config.json').read_text())['processes'] == 2  # really two, not accelerate's one-process trap
    assert len(read_history(out/'history.csv')) == 1 and r.stdout.count('roads: 2 processes') == 1
    best = read_history(out/'history.csv').iloc[0][['dice', 'mIoU', 'relaxed_be3']].to_numpy(float)  # the default loss
    np.testing.assert_allclose(one_process_figures(tiles, out)[1:], best, rtol=0, atol=1e-5)

def test_kill_and_resume(tiles, tmp_path):
    args = (command('unet_fastai_train'), 'roads', tiles, *COMMON, '--epochs', 4)
    r = run(*args, '--out', tmp_path/'straight', tmp=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    out = tmp_path/'killed'
    p = subprocess.Popen([*map(str, args), '--out', str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    seen, deadline = set(), time.time() + 300  # each checkpoint is a new file (a temporary renamed): count them
    while len(seen) < 2 and p.poll() is None and time.time() < deadline:
        try: seen.add(os.stat(out/'checkpoint.pth').st_ino)
        except FileNotFoundError: pass
        time.sleep(0.005)
    os.killpg(p.pid, signal.SIGKILL); p.wait()
    assert read_checkpoint(out/'checkpoint.pth')['epoch'] == 2, 'the kill did not land in the third epoch'
    assert not (out/'model.pkl').exists()
    r = run(*args, '--out', out, '--resume', tmp=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    assert 'resuming' in r.stdout and 'after epoch 2' in r.stdout
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS  # a temporary of the killed epoch is gone too
    a, b = (read_history(d/'history.csv') for d in (tmp_path/'straight', out))
    assert list(b.epoch) == [1, 2, 3, 4]
    np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=0, atol=1e-5)  # the same run as the uninterrupted one
    lr_a, lr_b = (read_checkpoint(d/'checkpoint.pth')['lrs'] for d in (tmp_path/'straight', out))
    assert lr_b[2] == lr_a[2] and lr_b == lr_a  # epoch 3 at the same point of the one-cycle schedule
    from fastai.learner import load_learner
    from unet_fastai.spec import model_spec
    spec = model_spec(load_learner(out/'model.pkl'))
    assert (spec.tile, spec.scale, spec.recipe['epochs'], spec.recipe['resume']) == (128, 1.0, 4, True)
    # a resume with other options is refused, naming them; so is an unreadable checkpoint
    r = run(*args[:-2], '--epochs', 5, '--bs', 4, '--out', out, '--resume', tmp=tmp_path)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"error: {out/'checkpoint.pth'}: written by a run with other options: bs was 2, now 4; epochs was 4, now 5; "
        "global_bs was 2, now 4. Resume with the same options, or train without --resume to start over"]
    (out/'checkpoint.pth').write_bytes(b'\0' * 100)
    r = run(*args, '--out', out, '--resume', tmp=tmp_path)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith(f"error: {out/'checkpoint.pth'}: not a readable checkpoint")

@pytest.mark.parametrize('args,code,message', [
    (('road', '.'), 2, "unknown task 'road': use one of camvid, roads, pennfudan, pets, dogs, cityscapes, bsds500, pairs, scenes"),
    (('roads', 'no/such/folder'), 1, "no/such/folder: data folder not found; check the path"),
    (('roads', '.', '--epoch', 3), 2, "unet_fastai_train roads: unrecognized arguments: --epoch 3"),
    (('roads', '.', '--epochs', 'three'), 1, "unet_fastai_train roads: option epochs takes an integer, not 'three'")])
def test_wrong_command_lines(args, code, message, tmp_path):
    r = run(command('unet_fastai_train'), *args, tmp=tmp_path)
    assert r.returncode == code and 'Traceback' not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'error: {message}'), r.stderr

def test_help_lists_tasks_and_options(tmp_path):
    r = run(command('unet_fastai_train'), '--help', tmp=tmp_path)
    assert r.returncode == 0 and all(f'\n  {t} ' in r.stdout for t in ('camvid', 'roads', 'pets', 'dogs', 'pairs', 'bsds500'))
    assert '--freeze-epochs' in r.stdout and 'torchrun' in r.stdout
    r = run(command('unet_fastai_train'), 'roads', '--help', tmp=tmp_path)
    assert r.returncode == 0 and '--resume' in r.stdout and 'batch size (per process)' in r.stdout

def test_task_help_says_each_default_once():
    "Every option of every task's --help states its default once (`--monitor`'s help says it in words: no second one)"
    from unet_fastai.cli.launch import TASKS, task_function, task_parser
    for task in TASKS:
        for a in task_parser(task, task_function(task))._actions:
            assert (a.help or '').count('(default') <= 1, (task, a.dest, a.help)
    mon = next(a for a in task_parser('roads', task_function('roads'))._actions if a.dest == 'monitor')
    assert mon.help.endswith('(default: mIoU)'), mon.help

def test_every_command_help_says_each_default_once():
    "The other commands' --help (one parser from each function's docments) state each default once too"
    from unet_fastai.cli.command import command_parser
    from unet_fastai.cli.main import COMMANDS, NOT_ON_THE_COMMAND_LINE, command_function
    for name in COMMANDS:
        if name == 'train': continue
        for a in command_parser(command_function(name), name, NOT_ON_THE_COMMAND_LINE)._actions:
            assert (a.help or '').count('(default') <= 1, (name, a.dest, a.help)

def test_training_log_has_no_bars(tiles, tmp_path):
    "Redirected to files, unet_fastai_train writes fastai's table of epochs and no progress bar (no \\r, no █)"
    r = run(command('unet_fastai_train'), 'roads', tiles, *COMMON, '--epochs', 1, '--out', tmp_path/'run', tmp=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'train_loss' in r.stdout and 'best mIoU' in r.stdout
    for text in (r.stdout, r.stderr): assert '\r' not in text and '█' not in text, text[-2000:]

def test_diverging_run_stops(tiles, tmp_path):
    "--lr 10 diverges: one error line naming the epoch and a lower --lr, exit 1, no model exported"
    r = run(command('unet_fastai_train'), 'roads', tiles, *COMMON[:4], '--lr', 10, '--pretrained', 'false', '--epochs', 3,
            '--out', tmp_path/'run', tmp=tmp_path)
    errors = [l for l in r.stderr.splitlines() if l.startswith('error: ')]
    assert r.returncode == 1 and len(errors) == 1 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    assert errors[0].startswith('error: training diverged at epoch ') and 'Try a lower --lr, e.g. 1' in errors[0], errors[0]
    assert not (tmp_path/'run'/'model.pkl').exists()

def test_one_training_per_folder(tiles, tmp_path):
    "A second training into the --out of a running one names the holder and exits 1; the first one ends normally"
    out = tmp_path/'run'
    p = subprocess.Popen([*map(str, (command('unet_fastai_train'), 'roads', tiles, *COMMON, '--epochs', 3, '--out', out))],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, 'TMPDIR': str(tmp_path)})
    deadline = time.time() + 120
    held = ''
    while time.time() < deadline and not held:
        try: held = (out/'.unet_fastai.lock').read_text()
        except FileNotFoundError: time.sleep(0.05)
    assert held.startswith(f'process {p.pid} (unet_fastai_train, started '), held
    r = run(command('unet_fastai_train'), 'roads', tiles, *COMMON, '--epochs', 1, '--out', out, tmp=tmp_path)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"error: {out} is in use by {held}; wait for it (--wait) or choose another folder"], r.stderr
    assert p.wait(timeout=600) == 0 and sorted(x.name for x in out.iterdir()) == OUTPUTS  # no lock file left
