"""Support-chat history in MongoDB, searched with an aggregation pipeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo.database import Database


class ChatHistory:
    def __init__(self, db: Database[Any]) -> None:
        self.chats = db.chats

    def add(self, customer: str, messages: list[tuple[str, str]], at: datetime) -> None:
        self.chats.insert_one({"customer": customer, "at": at,
                               "messages": [{"from": who, "text": text}
                                            for who, text in messages]})

    def search(self, customer: str, word: str) -> list[dict[str, Any]]:
        """The customer's chats mentioning ``word``, newest first, with only the matching
        messages kept."""
        pattern = rf"\b{word}\b"
        return list(self.chats.aggregate([
            {"$match": {"customer": customer, "messages.text": {"$regex": pattern,
                                                                "$options": "i"}}},
            {"$project": {"_id": 0, "at": 1, "messages": {"$filter": {
                "input": "$messages", "as": "m",
                "cond": {"$regexMatch": {"input": "$$m.text", "regex": pattern,
                                         "options": "i"}}}}}},
            {"$sort": {"at": -1}},
        ]))
