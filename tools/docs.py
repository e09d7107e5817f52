"""Build the documentation site: one HTML page per notebook of nbs/, in the README's order, with the notebooks' outputs
(pictures, tables), the API of every exported function and class from its docments, and links between the pages.

    python tools/docs.py [--execute] [--out _docs]

The notebooks keep their outputs in git, as fastai's do, so the site is built from them in seconds without running
any code, and a reader on GitHub sees the pictures too. `--execute` first runs every notebook (as `nbdev_test` does:
`#| slow` cells skipped) and saves its outputs in place: run it after changing a notebook, then `nbdev_clean`.
Quarto, which nbdev's own `nbdev_docs` needs, cannot be installed here; nbconvert renders the pages instead, and
nbdev's `show_doc` renderer the API. `check_site` lists the internal links and images of a built site that point
nowhere (tests/test_docs.py builds the site and asserts there are none).
"""
import argparse, ast, html, importlib, os, re, shutil, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'

def notebooks(nbs=NBS)->list:
    "The notebooks in the reader's order: the index, the guides, then the modules' notebooks in the pipeline's order"
    return sorted(nbs.glob('*.ipynb'), key=lambda p: (p.stem != 'index', p.stem[:2].isdigit(),
                                                      GUIDES.index(p.stem) if p.stem in GUIDES else len(GUIDES), p.name))

def _directives(src:str)->tuple:
    "(nbdev directives of a cell's first lines, the source without them)"
    lines, d = src.splitlines(), {}
    while lines and lines[0].startswith('#|'):
        k, _, v = lines.pop(0)[2:].strip().partition(' ')
        d[k] = v
    return d, '\n'.join(lines)

def _api(src:str, module)->str:
    "Markdown of nbdev's `show_doc` for the public functions and classes an export cell defines"
    from nbdev.showdoc import BasicMarkdownRenderer
    out = []
    for n in ast.parse(src).body:
        if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith('_') and hasattr(module, n.name):
            md = BasicMarkdownRenderer(getattr(module, n.name))._repr_markdown_()
            out.append('\n'.join(l for l in md.splitlines() if not l.startswith('[source](')))
    return '\n\n'.join(out)

def _link_notebooks(md:str, stems:set)->str:
    "`18_train.learner` (a notebook's name in backticks) becomes a link to its page"
    return re.sub(r'(?<!\[)`(\w+)`', lambda m: f'[`{m[1]}`]({m[1]}.html)' if m[1] in stems else m[0], md)

def page(path:Path, stems:set):
    "The notebook at `path` as nbconvert renders it: hidden cells out, directives stripped, API docs after export cells"
    import nbformat
    nb = nbformat.read(path, as_version=4)
    module, cells = None, []
    for c in nb.cells:
        d, body = _directives(c.source) if c.cell_type == 'code' else ({}, c.source)
        if 'default_exp' in d: module = importlib.import_module(f"unet_fastai.{d['default_exp']}")
        if c.cell_type == 'code' and ('hide' in d or 'default_exp' in d or 'nbdev_export()' in body): continue
        if c.cell_type == 'markdown':  # links of the README (the index) into nbs/ become links between pages
            c.source = re.sub(r'\]\(nbs/([\w.]+)\.ipynb\)', r'](\1.html)', _link_notebooks(body, stems).replace('](nbs/images/', '](images/'))
        else: c.source = body
        cells.append(c)
        if 'export' in d and module is not None and (api := _api(body, module)):
            cells.append(nbformat.v4.new_markdown_cell(api))
    nb.cells = cells
    return nb

STAGES = {'core': 'Foundations', 'workers': 'Foundations', 'io': 'Reading and writing', 'data': 'Data',
          'train': 'Training', 'infer': 'Using a model', 'datasets': 'Reference data sets', 'cli': 'Command line',
          'all': 'Foundations', 'spec': 'Foundations'}
GUIDES = ('guide', 'faults', 'benchmarks')  # the pages without a module, in the reader's order

def stage(p:Path)->str:
    "The stage a page belongs to: its module's subpackage (`18_train.learner` → Training); pages without a module are guides"
    name = p.stem.split('_', 1)[-1]
    return STAGES.get(name.split('.')[0], 'Guides') if p.stem[:2].isdigit() else 'Guides'

def title(p:Path)->str:
    "A notebook's title: its first markdown heading, else its name"
    import nbformat
    for c in nbformat.read(p, as_version=4).cells:
        if c.cell_type == 'markdown' and (m := re.match(r'#\s+(.+)', c.source)): return m[1].strip()
    return p.stem

def _nav(pages:list, current:str)->str:
    "The side bar: every page by its title, grouped by stage in the pipeline's order"
    groups = {}
    for p in pages:
        if p.stem != 'index': groups.setdefault(stage(p), []).append(p)
    items = ''.join(f'<li style="list-style:none;margin-top:.6em"><b>{html.escape(g)}</b><ul style="padding-left:1em">' +
                    ''.join(f'<li{" class=current" if p.stem == current else ""}><a href="{p.stem}.html" title="{p.stem}">'
                            f'{html.escape(title(p))}</a></li>' for p in ps) + '</ul></li>' for g, ps in groups.items())
    return ('<nav style="position:fixed;left:0;top:0;bottom:0;width:15em;overflow:auto;padding:1em;font:14px sans-serif;'
            'background:#f6f6f6;border-right:1px solid #ddd"><b><a href="index.html">unet_fastai</a></b><ul style="padding-left:0">'
            f'{items}</ul></nav><div style="margin-left:17em">')

def build(out=ROOT/'_docs', nbs=NBS)->Path:
    "Write the site to `out`: index.html and a page per notebook, the images beside them"
    from nbconvert import HTMLExporter
    out, pages = Path(out), notebooks(nbs)
    stems = {p.stem for p in pages}
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    if (nbs/'images').is_dir(): shutil.copytree(nbs/'images', out/'images')
    exporter = HTMLExporter(template_name='lab', exclude_input_prompt=True, exclude_output_prompt=True)
    for p in pages:
        body, _ = exporter.from_notebook_node(page(p, stems))
        body = re.sub(r'(<body[^>]*>)', lambda m: m[1] + _nav(pages, p.stem), body, count=1).replace('</body>', '</div></body>')
        (out/f'{p.stem}.html').write_text(body, encoding='utf-8')
    return out

def check_site(out)->list:
    "The internal links and images of the site in `out` whose targets do not exist, as 'page: target'"
    bad = []
    for f in sorted(Path(out).glob('*.html')):
        for target in re.findall(r'(?:href|src)="([^"#?]+)', f.read_text(encoding='utf-8')):
            if re.match(r'^(https?:|mailto:|data:|//)', target): continue
            if not (f.parent/target).exists(): bad.append(f'{f.name}: {target}')
    return bad

def compress_png(b64:str)->str:
    "A notebook's PNG output (base64) as a palette PNG of at most 256 colours, when that is smaller: plots and scenes look the same at a quarter of the size"
    import base64, io
    from PIL import Image
    raw = base64.b64decode(b64)
    im = Image.open(io.BytesIO(raw))
    if im.mode == 'P': return b64
    out = io.BytesIO()
    im.convert('RGB').quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(out, 'PNG', optimize=True)
    return base64.b64encode(out.getvalue()).decode() if out.tell() < len(raw) else b64

def compress_outputs(nb)->int:
    "Compress the PNG outputs of notebook `nb` (an nbformat node) in place with `compress_png`; how many changed"
    n = 0
    for c in nb.cells:
        for o in c.get('outputs', []):
            png = o.get('data', {}).get('image/png')
            if png and (new := compress_png(png if isinstance(png, str) else ''.join(png))) != png: o['data']['image/png'], n = new, n + 1
    return n

def execute(paths=None, nbs=NBS)->list:
    "Run every notebook but the index (slow cells skipped, as `nbdev_test` does) and save its outputs in place; the names of those that failed"
    from execnb.shell import CaptureShell
    from execnb.nbio import read_nb, write_nb
    from fastcore.xtras import working_directory
    os.environ['IN_TEST'] = '1'
    failed = []
    for p in paths or [p for p in notebooks(nbs) if p.stem != 'index']:  # the index is the README: its source alone
        nb = read_nb(p)  # as stored: the cells keep their directives
        skip = lambda c: c.cell_type != 'code' or 'nbdev_export(' in c.source or 'slow' in _directives(c.source)[0]
        shell = CaptureShell(p)
        try:
            with working_directory(p.parent): shell.run_all(nb, exc_stop=True, preproc=skip)
        except Exception:
            print(f'{p.name}: failed, its outputs not saved\n{shell.prettytb(fname=p)}', file=sys.stderr, flush=True)
            failed.append(p.name); continue
        compress_outputs(nb)
        write_nb(nb, p)
        print(f'executed {p.name}', flush=True)
    return failed

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--execute', action='store_true', help='run the notebooks first and save their outputs in place')
    ap.add_argument('--compress', action='store_true', help="only compress the notebooks' PNG outputs in place (as --execute does)")
    ap.add_argument('--out', default=str(ROOT/'_docs'))
    a = ap.parse_args()
    if a.compress:
        import nbformat
        for p in notebooks():
            nb = nbformat.read(p, as_version=4)
            if compress_outputs(nb): nbformat.write(nb, p)
        sys.exit(0)
    failed = execute() if a.execute else []
    out = build(a.out)
    bad = check_site(out)
    print(f"{len(list(out.glob('*.html')))} pages in {out}; open {out/'index.html'}")
    for b in bad: print(f'broken: {b}', file=sys.stderr)
    sys.exit(1 if bad or failed else 0)
