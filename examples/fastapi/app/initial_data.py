"""`python -m app.initial_data`: the first superuser (run after `alembic upgrade head`)."""

from __future__ import annotations

from sqlmodel import Session

from app.core.db import engine, init_db


def main() -> None:
    with Session(engine) as session:
        init_db(session)


if __name__ == "__main__":
    main()
