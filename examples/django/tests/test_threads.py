"""A connection Django keeps in another thread (asgiref's sync_to_async thread, a worker
pool) must not outlive the test's database."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import async_to_sync, sync_to_async

from catalog.models import Category

# One worker thread for the whole module: its Django connection stays open between tests.
worker = ThreadPoolExecutor(max_workers=1)


def count_in_worker():
    return worker.submit(Category.objects.count).result()


@pytest.mark.django_db(transaction=True)
def test_worker_thread_writes():
    worker.submit(Category.objects.create, name="toys").result()
    assert count_in_worker() == 3


@pytest.mark.django_db(transaction=True)
def test_worker_thread_next_test():
    # The previous test's database was reset (its connections ended): the worker's
    # connection was closed with it, and this one reaches this test's database.
    assert count_in_worker() == 2


@pytest.mark.django_db(transaction=True)
def test_sync_to_async_thread():
    count = async_to_sync(sync_to_async(Category.objects.count, thread_sensitive=False))
    assert count() == 2
