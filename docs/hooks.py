"""MkDocs hook (mkdocs.yml ``hooks:``): serves the repository's own Markdown outside ``docs/``.

The site is built from the files where they live, nothing is copied into the repository:

- ``PAGES`` below (the README as the home page, the changelog, the benchmark results) join the
  site at build time as pages, at the same place relative to one another as in the repository
  (``README.md`` becomes ``index.md``, files in ``docs/`` lose that prefix);
- a relative link or image in any page is resolved against the repository, where it was written
  for (GitHub renders these files too), and rewritten to where its target sits in the site: the
  README's ``docs/design.md`` becomes ``design.md``, ``benchmarks/RESULTS.md`` stays as it is;
- a linked file that is no page (a chart, ``LICENSE``, an example script) is served as it is,
  brought in when a page links to it; a link to a folder, which a static site cannot list, is
  left as plain text.

A link to a Markdown file that is neither in ``docs/`` nor in ``PAGES``, or to nothing, is left
for MkDocs to report: ``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import logging
import posixpath
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit
from xml.etree.ElementTree import Element

from markdown import Extension, Markdown
from markdown.treeprocessors import Treeprocessor
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.hooks.repo_pages")

#: Markdown files outside docs/ that are pages of the site (repository paths, from its root).
PAGES = ["README.md", "CHANGELOG.md", "benchmarks/RESULTS.md", "examples/README.md"]

#: Path parts never served from the repository, even when linked (so are dot-files, as in docs/).
_PRIVATE = {"__pycache__"}


class _State:
    def __init__(self) -> None:
        self.root = Path()  # the repository (mkdocs.yml's folder)
        self.docs_prefix = "docs/"  # docs_dir relative to root, with a trailing slash
        self.config: MkDocsConfig | None = None
        self.files: Files | None = None
        self.source: dict[str, str] = {}  # site src_uri -> repository path, for every page
        self.page: Page | None = None  # the page being rendered


_state = _State()


def _site_uri(repo_path: str) -> str:
    """Where a repository file sits in the site (as a src_uri, relative to docs_dir)."""
    if repo_path == "README.md":
        return "index.md"
    if repo_path.startswith(_state.docs_prefix):
        return repo_path[len(_state.docs_prefix) :]
    return repo_path


def _bring(repo_path: str) -> File | None:
    """Add a repository file to the site at its site path; None if that path is taken by another."""
    assert _state.config is not None and _state.files is not None
    uri = _site_uri(repo_path)
    present = _state.files.get_file_from_path(uri)
    if present is not None:
        if Path(present.abs_src_path or "") != _state.root / repo_path:
            log.warning(f"{repo_path} would be served as {uri}, which docs/ already has")
            return None
        return present
    file = File.generated(_state.config, uri, abs_src_path=str(_state.root / repo_path))
    _state.files.append(file)
    return file


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    _state.root = Path(config.config_file_path).resolve().parent
    docs = Path(config.docs_dir).resolve().relative_to(_state.root).as_posix()
    _state.docs_prefix = docs + "/"
    config.markdown_extensions.append(_RepoLinksExtension())
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    _state.config, _state.files, _state.page = config, files, None
    _state.source = {f.src_uri: _state.docs_prefix + f.src_uri for f in files if f.is_documentation_page()}
    for repo_path in PAGES:
        if not (_state.root / repo_path).is_file():
            log.warning(f"docs/hooks.py: PAGES names {repo_path}, which does not exist")
            continue
        file = _bring(repo_path)
        if file is not None:
            _state.source[file.src_uri] = repo_path
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    _state.page = page  # pages render one at a time, right after this event: the links' context
    return markdown


def _rewrite(element: Element, attribute: str) -> None:
    url = element.get(attribute)
    page = _state.page
    if not url or page is None or page.file.src_uri not in _state.source:
        return
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not parts.path or parts.path.startswith("/"):
        return  # external, an anchor in this page, or absolute
    here = _state.source[page.file.src_uri]
    target = posixpath.normpath(posixpath.join(posixpath.dirname(here), unquote(parts.path)))
    names = target.split("/")
    if names[0] == ".." or _PRIVATE.intersection(names) or any(name.startswith(".") for name in names):
        return  # outside the repository, or not to be served: MkDocs reports it
    path = _state.root / target
    assert _state.config is not None
    if path.resolve().is_relative_to(Path(_state.config.site_dir).resolve()):
        return  # the build's own output
    if path.is_dir():
        if element.tag == "a":  # a folder's listing is GitHub's, not a static site's: keep the text
            element.tag = "span"
            element.attrib.pop("href", None)
            element.attrib.pop("title", None)
        return
    if not path.is_file():
        return  # MkDocs reports it
    uri = _site_uri(target)
    assert _state.files is not None
    if _state.files.get_file_from_path(uri) is None and (target.endswith(".md") or _bring(target) is None):
        return  # a Markdown file that is no page of the site: MkDocs reports it
    new_path = posixpath.relpath(uri, posixpath.dirname(page.file.src_uri) or ".")
    element.set(attribute, urlunsplit(("", "", quote(new_path), parts.query, parts.fragment)))


class _RepoLinks(Treeprocessor):
    def run(self, root: Element) -> None:
        for element in root.iter():
            if element.tag == "a":
                _rewrite(element, "href")
            elif element.tag == "img":
                _rewrite(element, "src")


class _RepoLinksExtension(Extension):
    def extendMarkdown(self, md: Markdown) -> None:
        # Before MkDocs' own "relpath" (priority 0), which validates and rewrites links to URLs.
        md.treeprocessors.register(_RepoLinks(md), "cacheaside_repo_links", 1)
