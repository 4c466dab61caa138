"""The example's own tests (``python manage.py test``). ``TransactionTestCase``: each test's writes
commit, so ``on_commit`` callbacks run as they do in production (``TestCase`` would roll them back)."""

from __future__ import annotations

import threading

from django.db import connection, transaction
from django.test import Client, TransactionTestCase

from .models import Article
from .views import get_article, set_title


class ArticleViews(TransactionTestCase):
    def setUp(self) -> None:
        get_article.clear()
        self.pk = Article.objects.create(title="old").pk
        self.client = Client()

    def test_a_cached_read_and_a_write_that_invalidates(self) -> None:
        self.assertEqual(self.client.get(f"/articles/{self.pk}").json()["title"], "old")
        hits = get_article.stats().hits
        self.assertEqual(self.client.get(f"/articles/{self.pk}").json()["title"], "old")
        self.assertEqual(get_article.stats().hits, hits + 1)
        reply = self.client.post(f"/articles/{self.pk}/title", '{"title": "new"}', content_type="application/json")
        self.assertEqual(reply.json()["title"], "new")
        self.assertEqual(self.client.get(f"/articles/{self.pk}").json()["title"], "new")
        self.assertEqual(self.client.get("/articles/999").status_code, 404)

    def test_a_read_before_the_commit_does_not_outlive_it(self) -> None:
        """Another thread (its own connection, so it sees only committed rows) reads between the write and
        the commit and caches the old title; the eviction after the commit removes it."""
        get_article(self.pk)
        misses = get_article.stats().misses
        seen: list[object] = []

        def reader() -> None:
            try:
                seen.append(get_article(self.pk))
            except Exception as exc:
                seen.append(exc)
            finally:
                connection.close()

        with transaction.atomic():
            set_title(self.pk, "new")
            thread = threading.Thread(target=reader)
            thread.start()
            thread.join(10)
            self.assertEqual(get_article.stats().misses, misses + 1)  # the reader missed, and cached what it read
            self.assertEqual(seen, [{"id": self.pk, "title": "old", "body": ""}])
        self.assertEqual(get_article(self.pk)["title"], "new")
