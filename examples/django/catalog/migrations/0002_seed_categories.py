from django.db import migrations

SEED_CATEGORIES = ["books", "games"]


def seed_categories(apps, schema_editor):
    Category = apps.get_model("catalog", "Category")
    db_alias = schema_editor.connection.alias
    for name in SEED_CATEGORIES:
        Category.objects.using(db_alias).get_or_create(name=name)


def unseed_categories(apps, schema_editor):
    Category = apps.get_model("catalog", "Category")
    db_alias = schema_editor.connection.alias
    Category.objects.using(db_alias).filter(name__in=SEED_CATEGORIES).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("catalog", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(seed_categories, unseed_categories),
    ]
