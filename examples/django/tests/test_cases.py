"""Django's own TestCase classes: one database per class, as Django's runner gives."""

from decimal import Decimal

from django.test import TestCase, TransactionTestCase

from catalog.models import Category, Product


class ProductTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.books = Category.objects.get(name="books")
        Product.objects.create(category=cls.books, name="Emma", price=Decimal("7"), sku="BK-7")

    def test_class_data_is_there(self):
        assert Product.objects.count() == 1
        Product.objects.create(category=self.books, name="Ulysses", price=Decimal("9"),
                               sku="BK-8")

    def test_each_test_rolls_back(self):
        assert Product.objects.count() == 1


class OtherClassTests(TestCase):
    def test_other_class_sees_none_of_it(self):
        assert Product.objects.count() == 0
        assert Category.objects.count() == 2


class CommitTests(TransactionTestCase):
    def test_commits(self):
        Category.objects.create(name="toys")
        assert Category.objects.count() == 3
