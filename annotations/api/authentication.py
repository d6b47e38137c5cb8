"""Token authentication for scripts: ``Authorization: Token <key>``, answered exactly as DRF's
``TokenAuthentication`` answers, for less.

DRF builds ``Token.objects.select_related("user").get(key=...)`` on every request; on the
experts' hot path that was a tenth of the web process's CPU and one of its few database
round trips. Here the lookup is a prepared statement (``annotations.prepared``), and each
web process keeps what it found for ``TOKEN_CACHE_SECONDS`` (default 10; 0 turns the cache
off). Deleting a token or saving or deleting its user clears the entry in the process that
did it at once (signals); other web processes notice within ``TOKEN_CACHE_SECONDS``.

A token expires ``TOKEN_LIFETIME_DAYS`` after it was issued, and changing a user's password
deletes their tokens (a leaked token must not outlive the password that was changed
because of the leak).
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from datetime import timedelta
from functools import cache
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from annotations.prepared import Joined, Statement

CACHE_SIZE = 10_000  # tokens per process; the oldest entry goes first
_EXPIRED = "Token expired; get a new one with POST /api/auth/token/."


@cache
def _token_statement(using: str = "default") -> tuple[Joined, Statement]:
    j = Joined(using, tk=Token, u=get_user_model())
    sql = (
        f"SELECT {j.columns} FROM {j.table('tk')} "
        f"JOIN {j.table('u')} ON {j.column('u', 'id')} = {j.column('tk', 'user')} "
        f"WHERE {j.column('tk', 'key')} = %(key)s"
    )
    return j, Statement(sql)


class _TokenCache:
    """key -> (expires at, user, token), for this process; thread-safe."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, Any, Token]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[Any, Token] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self.clock():
                del self._entries[key]
                return None
            return entry[1], entry[2]

    def put(self, key: str, user: Any, token: Token, seconds: float) -> None:
        with self._lock:
            self._entries[key] = (self.clock() + seconds, user, token)
            self._entries.move_to_end(key)
            while len(self._entries) > CACHE_SIZE:
                self._entries.popitem(last=False)

    def forget(self, *, key: str | None = None, user_id: Any = None) -> None:
        with self._lock:
            if key is not None:
                self._entries.pop(key, None)
            if user_id is not None:
                for k in [k for k, e in self._entries.items() if e[1].pk == user_id]:
                    del self._entries[k]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


token_cache = _TokenCache()


def token_expired(token: Token) -> bool:
    days = settings.TOKEN_LIFETIME_DAYS
    return days > 0 and token.created + timedelta(days=days) <= timezone.now()


class PreparedTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``: DRF's answers, one prepared query, a short cache."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        seconds = settings.TOKEN_CACHE_SECONDS
        hit = token_cache.get(key) if seconds > 0 else None
        if hit is not None:
            user, token = hit
            if token_expired(token):
                token_cache.forget(key=key)
                raise exceptions.AuthenticationFailed(_EXPIRED)
            # Each request gets its own copy: nothing one request sets on its user object
            # reaches another.
            return copy.copy(user), token
        joined, statement = _token_statement()
        found = joined.fetch_one(statement, {"key": key})
        if found is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        token, user = found["tk"], found["u"]
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        if token_expired(token):
            raise exceptions.AuthenticationFailed(_EXPIRED)
        token.user = user
        if seconds > 0:
            token_cache.put(key, user, token, seconds)
            return copy.copy(user), token
        return user, token


@receiver(post_delete, sender=Token)
def _token_deleted(sender: Any, instance: Token, **kwargs: Any) -> None:
    token_cache.forget(key=instance.key)


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
@receiver(post_delete, sender=settings.AUTH_USER_MODEL)
def _user_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    token_cache.forget(user_id=instance.pk)


@receiver(pre_save, sender=settings.AUTH_USER_MODEL)
def _password_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Revoke a user's tokens when their password changes, wherever it is changed (the
    password-change page, the admin, ``set_password`` in a script): a signal is the one place
    all of them pass."""
    if instance.pk is None or kwargs.get("raw"):
        return
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and "password" not in update_fields:
        return  # e.g. last_login on every login: no query
    stored = sender.objects.filter(pk=instance.pk).values_list("password", flat=True).first()
    if stored is not None and stored != instance.password:
        Token.objects.filter(user_id=instance.pk).delete()
