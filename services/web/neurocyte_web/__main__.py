"""`python -m neurocyte_web`: the web front-end, served by uvicorn."""

import sys

import structlog
import uvicorn

from neurocyte_shared.messaging import aws
from neurocyte_shared.messaging.bus import EventPublisher
from neurocyte_shared.messaging.config import ConfigurationError
from neurocyte_shared.messaging.logs import configure_logging

from .app import create_app
from .settings import WebSettings


def main() -> None:
    configure_logging("web")
    try:
        settings = WebSettings.from_env()
    except ConfigurationError as exc:
        structlog.get_logger().error("configuration_error", error=str(exc))
        sys.exit(2)
    s3 = aws.client("s3", settings.endpoint_url)
    ses = aws.client("ses", settings.endpoint_url)
    if settings.endpoint_url:  # LocalStack's SES sends only from a verified identity, as AWS does
        ses.verify_email_identity(EmailAddress=settings.mail_from)
    publisher = EventPublisher(aws.client("events", settings.endpoint_url), settings.event_bus)
    app = create_app(settings, s3, ses, publisher.publish)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", proxy_headers=True)


if __name__ == "__main__":
    main()
