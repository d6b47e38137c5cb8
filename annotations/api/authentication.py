"""Token authentication for scripts, with the token lookup as a prepared statement.

DRF's ``TokenAuthentication`` builds ``Token.objects.select_related("user").get(key=...)``
on every request; on the experts' hot path that ORM work was about a tenth of the web
process's CPU. This class runs the same lookup as SQL written once (``annotations.prepared``)
and answers exactly as DRF does. Nothing is cached: a deleted token or a deactivated user is
refused on the very next request.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from annotations.prepared import Joined, Statement


@cache
def _token_statement(using: str = "default") -> tuple[Joined, Statement]:
    j = Joined(using, tk=Token, u=get_user_model())
    sql = (
        f"SELECT {j.columns} FROM {j.table('tk')} "
        f"JOIN {j.table('u')} ON {j.column('u', 'id')} = {j.column('tk', 'user')} "
        f"WHERE {j.column('tk', 'key')} = %(key)s"
    )
    return j, Statement(sql)


class PreparedTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``, as DRF's, looked up in one prepared query."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        joined, statement = _token_statement()
        found = joined.fetch_one(statement, {"key": key})
        if found is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        token, user = found["tk"], found["u"]
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        token.user = user
        return user, token
