"""The web service's own settings (beside `Settings`, which every service reads)."""

from __future__ import annotations

from pydantic import Field

from neurocyte_shared.messaging.config import EnvSettings


class WebSettings(EnvSettings):
    upload_bucket: str = Field(alias="NEUROCYTE_UPLOAD_BUCKET", description="where uploads arrive")
    data_bucket: str = Field(alias="NEUROCYTE_DATA_BUCKET", description="stores, spike tables, results")
    event_bus: str = Field(alias="NEUROCYTE_EVENT_BUS", description="the EventBridge bus events are put on")
    endpoint_url: str | None = Field(None, alias="AWS_ENDPOINT_URL", description="AWS endpoint (LocalStack)")
    secret: str = Field(alias="NEUROCYTE_WEB_SECRET", min_length=32,
                        description="web: the key that signs sign-in links and session cookies (32+ characters)")
    base_url: str = Field("http://127.0.0.1:8080", alias="NEUROCYTE_WEB_BASE_URL",
                          description="web: the address users reach the site at (links in sign-in emails)")
    host: str = Field("127.0.0.1", alias="NEUROCYTE_WEB_HOST", description="web: the interface to listen on")
    port: int = Field(8080, ge=1, le=65535, alias="NEUROCYTE_WEB_PORT", description="web: the port to listen on")
    mail_from: str = Field("neurocyte@example.org", alias="NEUROCYTE_MAIL_FROM",
                           description="web: the sender of sign-in emails (an SES-verified identity on AWS)")
    max_upload_bytes: int = Field(50 * 1024**3, gt=0, alias="NEUROCYTE_MAX_UPLOAD_BYTES",
                                  description="web: the largest file a lab may upload through the page")
    secure_cookies: bool = Field(False, alias="NEUROCYTE_SECURE_COOKIES",
                                 description="web: 1 behind HTTPS (AWS): session cookies are sent over HTTPS only")
