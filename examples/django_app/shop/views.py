"""A view that reads an article through ``@cache_aside``, and one that renames it inside a transaction
through ``@invalidates``: its eviction is applied at once and again after the commit."""

from __future__ import annotations

import json
from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse

from cacheaside import cache_aside, invalidates

from .models import Article


@cache_aside(ttl=300, key="article:{pk}")
def get_article(pk: int) -> dict[str, Any] | None:
    article = Article.objects.filter(pk=pk).values("id", "title", "body").first()
    return None if article is None else dict(article)


@invalidates(get_article)
def set_title(pk: int, title: str) -> int:
    return Article.objects.filter(pk=pk).update(title=title)


def article(request: HttpRequest, pk: int) -> HttpResponse:
    found = get_article(pk)
    return JsonResponse(found) if found is not None else JsonResponse({"error": "no such article"}, status=404)


def retitle(request: HttpRequest, pk: int) -> HttpResponse:
    if request.method != "POST":
        return JsonResponse({"error": "POST a JSON body {\"title\": ...}"}, status=405)
    title = json.loads(request.body)["title"]
    with transaction.atomic():
        if not set_title(pk, title):
            return JsonResponse({"error": "no such article"}, status=404)
    return article(request, pk)
