from django.contrib import admin

from annotations import models


class MembershipInline(admin.TabularInline):
    model = models.Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(models.Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(models.Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["project", "user", "role"]
    list_filter = ["role", "project"]


@admin.register(models.Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "created_at"]
    list_filter = ["project"]


@admin.register(models.Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = ["id", "dataset", "label", "split", "width", "height"]
    list_filter = ["split", "dataset__project"]
    search_fields = ["original_name", "content_hash", "label"]
    list_select_related = ["dataset"]
    raw_id_fields = ["dataset", "project"]


@admin.register(models.ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["project", "version", "name", "kind", "architecture", "status"]
    list_filter = ["kind", "project"]


@admin.register(models.Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ["instance", "model_version", "label", "confidence"]
    list_filter = ["model_version"]
    raw_id_fields = ["instance", "model_version"]
    exclude = ["embedding"]


@admin.register(models.Explanation)
class ExplanationAdmin(admin.ModelAdmin):
    list_display = ["instance", "model_version", "method", "target"]
    raw_id_fields = ["instance", "model_version"]


@admin.register(models.Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "kind", "status", "done", "total", "created_at"]
    list_filter = ["kind", "status"]


@admin.register(models.WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ["hostname", "queues", "pid", "last_seen"]


@admin.register(models.InstanceComment)
class InstanceCommentAdmin(admin.ModelAdmin):
    list_display = ["id", "instance", "author", "created_at"]
    raw_id_fields = ["instance", "author"]
    search_fields = ["body"]
