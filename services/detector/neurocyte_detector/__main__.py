from neurocyte_shared.messaging.service import run_service

from .handlers import build

if __name__ == "__main__":
    run_service("detector", build)
