"""Typed keys for what the app holds; built and closed in `quanyi.app`, read by the handlers."""

from __future__ import annotations

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from access.channels import ChannelDirectory
from campaigns.service import CampaignService
from inventory.keys import Keys
from issuance.claims import ClaimService
from issuance.grants import GrantReader
from issuance.lifecycle import GrantLifecycle
from issuance.outcomes import OutcomeWaiter
from quanyi.clock import Clock
from quanyi.settings import Settings
from vendors.directory import VendorDirectory

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
KEYS = web.AppKey("keys", Keys)
REDIS = web.AppKey("redis", Redis)
POOL = web.AppKey("pool", asyncpg.Pool)
CHANNELS = web.AppKey("channels", ChannelDirectory)
CLAIMS = web.AppKey("claims", ClaimService)
GRANTS = web.AppKey("grants", GrantReader)
CAMPAIGNS = web.AppKey("campaigns", CampaignService)
LIFECYCLE = web.AppKey("lifecycle", GrantLifecycle)
OUTCOMES = web.AppKey("outcomes", OutcomeWaiter)
VENDORS = web.AppKey("vendors", VendorDirectory)
