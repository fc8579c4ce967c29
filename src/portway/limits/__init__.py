"""Limits per token and per user: requests and tokens per minute, concurrent
requests, and token budgets per day and per month.

:mod:`~portway.limits.model` says what they are; :class:`~portway.limits.limiter.Limiter`
reads them from the store and checks them with an enforcer, in this process's
memory (:mod:`~portway.limits.memory`) or in Redis across processes
(:mod:`~portway.limits.shared`, scripts in :mod:`~portway.limits.lua`);
:mod:`~portway.limits.guard` puts them around every model request, and
:mod:`~portway.limits.headers` writes OpenAI's ``x-ratelimit-*`` headers.
"""
