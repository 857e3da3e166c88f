"""Orders in PostgreSQL, using types SQLite does not have: JSONB lines and ARRAY tags."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, String, Text, select, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer: Mapped[str] = mapped_column(String(80), index=True)
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)


class OrderRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def place(self, customer: str, lines: list[dict[str, Any]], tags: list[str]) -> Order:
        order = Order(customer=customer, lines=lines, tags=tags)
        self.session.add(order)
        self.session.commit()
        return order

    def tagged(self, tag: str) -> list[Order]:
        """Orders whose tags contain ``tag`` (PostgreSQL's ARRAY @> operator)."""
        query = select(Order).where(Order.tags.contains([tag])).order_by(Order.id)
        return list(self.session.scalars(query))

    def quantity_of(self, sku: str) -> int:
        """Total quantity of ``sku`` over all orders, summed inside JSONB."""
        query = text("SELECT COALESCE(SUM((line->>'qty')::int), 0) "
                     "FROM orders, jsonb_array_elements(orders.lines) AS line "
                     "WHERE line->>'sku' = :sku")
        return int(self.session.scalar(query, {"sku": sku}) or 0)
