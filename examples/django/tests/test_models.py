from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from catalog.models import Category, Order, OrderLine, Product


@pytest.mark.django_db
def test_seeded_categories_present():
    assert Category.objects.count() == 2
    assert list(Category.objects.values_list("name", flat=True)) == ["books", "games"]


@pytest.mark.django_db
def test_create_product_first():
    assert Category.objects.count() == 2
    books = Category.objects.get(name="books")
    Product.objects.create(category=books, name="Dune", price=Decimal("9.99"), sku="BK-1")
    assert Product.objects.count() == 1


@pytest.mark.django_db
def test_create_product_second():
    # Same as above: would fail with count == 2 if the previous test leaked.
    assert Category.objects.count() == 2
    games = Category.objects.get(name="games")
    Product.objects.create(category=games, name="Chess", price=Decimal("19.00"), sku="GM-1")
    assert Product.objects.count() == 1


def test_category_fixture_adds_one(category):
    assert Category.objects.count() == 3
    assert category.name == "electronics"


def test_sku_is_unique(product):
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.create(
            category=product.category, name="Clone", price=Decimal("1.00"), sku=product.sku
        )
    # The surrounding test transaction is still usable.
    assert Product.objects.count() == 1


@pytest.mark.django_db
def test_seeded_category_name_is_unique():
    with pytest.raises(IntegrityError), transaction.atomic():
        Category.objects.create(name="books")
    assert Category.objects.count() == 2


def test_order_total(product, customer):
    order = Order.objects.create(user=customer)
    OrderLine.objects.create(order=order, product=product, quantity=3)
    assert order.created is not None
    assert order.total() == Decimal("149.70")


@pytest.mark.django_db(transaction=True)
def test_transactional_test_commits():
    Category.objects.create(name="toys")
    assert Category.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_seeds_survive_transactional_tests():
    # Django's own flush after a transactional test empties every table, seeds too;
    # the next test's database is reset to the template instead, seeds included.
    assert sorted(Category.objects.values_list("name", flat=True)) == ["books", "games"]


def test_on_commit_runs_after_real_commit(transactional_db, django_user_model):
    calls = []
    user = django_user_model.objects.create_user(username="bob")
    with transaction.atomic():
        order = Order.objects.create(user=user)
        transaction.on_commit(lambda: calls.append(order.pk))
        assert calls == []  # not yet committed
    assert calls == [order.pk]

    def order_then_fail():
        with transaction.atomic():
            Order.objects.create(user=user)
            transaction.on_commit(lambda: calls.append("rolled back"))
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError, match="roll back"):
        order_then_fail()
    assert calls == [order.pk]
    assert Order.objects.count() == 1


@pytest.mark.django_db(reset_sequences=True)
def test_reset_sequences_first_pk_is_one():
    books = Category.objects.get(name="books")
    first = Product.objects.create(category=books, name="Atlas", price=Decimal("5"), sku="BK-9")
    assert first.pk == 1


def test_database_access_blocked_without_marker():
    with pytest.raises(RuntimeError, match="Database access not allowed"):
        Category.objects.count()
