"""Predictions and model cards: ``results`` (one row per prediction) and ``model_cards``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Plain SQL types, as in 0001, so this file stays valid whatever the Python models become. A result
names its study and instance by their de-identified UIDs (or, for a picture that was not stored, by
the hash of its bytes); its heatmap and overlay PNGs are kept encrypted under the blob key.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_cards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("card", sa.JSON(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("registered_by", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_model_cards_model_id_models", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_model_cards"),
        sa.UniqueConstraint("model_id", name="uq_model_cards_model_id"),
    )
    op.create_table(
        "results",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_name", sa.String(64), nullable=True),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=True),
        sa.Column("sop_instance_uid", sa.String(64), nullable=True),
        sa.Column("upload_id", sa.String(64), nullable=True),
        sa.Column("source_format", sa.String(16), nullable=False),
        sa.Column("explain_method", sa.String(16), nullable=False),
        sa.Column("sr_sop_instance_uid", sa.String(64), nullable=True),
        sa.Column("sc_sop_instance_uid", sa.String(64), nullable=True),
        sa.Column("timing", sa.JSON(), nullable=False),
        sa.Column("heatmap_png", sa.LargeBinary(), nullable=False),
        sa.Column("overlay_png", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_results"),
    )
    op.create_index("ix_results_user_name", "results", ["user_name"])
    op.create_index("ix_results_study_instance_uid", "results", ["study_instance_uid"])
    op.create_index("ix_results_upload_id", "results", ["upload_id"])
    op.create_index("ix_results_created_at", "results", ["created_at"])


def downgrade() -> None:
    op.drop_table("results")
    op.drop_table("model_cards")
