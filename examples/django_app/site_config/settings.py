"""Settings of the Django example: SQLite beside this file, cacheaside's after-commit integration on."""

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "shop",
    "cacheaside.integrations.django.CacheasideConfig",  # evictions after commit
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "site_config.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "example.sqlite",
        # WAL: readers see the last commit while a write is in progress, as on a server database.
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL"},
        "TEST": {"NAME": BASE_DIR / "test-example.sqlite"},  # a file, so that threads share it
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
