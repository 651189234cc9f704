#!/usr/bin/env python3
"""Checks every relative link of the built book: the target page exists and, for `page.html#anchor` or
`#anchor`, that page has an element with that id. External links (with a scheme) are not fetched.

Usage: scripts/check-doc-links.py docs/book [docs/src]
With the source directory, also fails for a page under it that SUMMARY.md does not list (mdBook does not
build such a page, so nothing could link to it).
Exit status 1 and one line per problem when there is any.
"""
import html.parser
import os
import sys
import urllib.parse


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()
        self.links = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href") is not None:
            self.links.append(attrs["href"])


def parse(path, cache={}):
    if path not in cache:
        page = Page()
        with open(path, encoding="utf-8") as f:
            page.feed(f.read())
        cache[path] = page
    return cache[path]


def main(book, src=None):
    book = os.path.abspath(book)
    broken = []
    if src:
        for root, _, files in os.walk(src):
            for name in sorted(files):
                if name.endswith(".md") and name != "SUMMARY.md":
                    rel = os.path.relpath(os.path.join(root, name), src)
                    if not os.path.isfile(os.path.join(book, rel[: -len(".md")] + ".html")):
                        broken.append(f"{rel}: not listed in SUMMARY.md, so not built")
    pages = 0
    checked = 0
    for root, _, files in os.walk(book):
        for name in sorted(files):
            # print.html repeats every page with rewritten links; 404.html links relative to the site root.
            if not name.endswith(".html") or name in ("print.html", "404.html"):
                continue
            path = os.path.join(root, name)
            pages += 1
            for href in parse(path).links:
                url = urllib.parse.urlsplit(href)
                if url.scheme or href.startswith("//") or href.startswith("mailto:"):
                    continue
                checked += 1
                target = path
                if url.path:
                    target = os.path.normpath(os.path.join(os.path.dirname(path), urllib.parse.unquote(url.path)))
                    if os.path.isdir(target):
                        target = os.path.join(target, "index.html")
                rel = os.path.relpath(path, book)
                if not target.startswith(book + os.sep):
                    broken.append(f"{rel}: {href}: points outside the book")
                elif not os.path.isfile(target):
                    broken.append(f"{rel}: {href}: no such page")
                elif url.fragment and target.endswith(".html"):
                    if urllib.parse.unquote(url.fragment) not in parse(target).ids:
                        broken.append(f"{rel}: {href}: no anchor #{url.fragment} in {os.path.relpath(target, book)}")
    for line in broken:
        print(line)
    print(f"{checked} relative links on {pages} pages, {len(broken)} broken")
    if pages == 0:
        print("no pages found: build the book first")
        return 1
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/book", sys.argv[2] if len(sys.argv) > 2 else None))
