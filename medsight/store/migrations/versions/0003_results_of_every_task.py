"""Results of segmentation and ECG models: ``results.task``, ``details``, ``image_kinds``, ``result_images``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

A classification result keeps its heatmap and overlay in their columns, as before; a segmentation
result (probability map, overlay, mask) or an ECG result (a strip plot, no heatmap) lists the images it
has in ``image_kinds``, and images other than the heatmap and overlay live in ``result_images``,
sealed under the blob key like the rest. Rows written before this revision are classifications.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:  # batch: SQLite alters a column by copying the table
        batch.add_column(sa.Column("task", sa.String(16), nullable=False, server_default="classification"))
        batch.add_column(sa.Column("details", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("image_kinds", sa.JSON(), nullable=True))
        batch.alter_column("heatmap_png", existing_type=sa.LargeBinary(), nullable=True)
        batch.alter_column("overlay_png", existing_type=sa.LargeBinary(), nullable=True)
    op.create_table(
        "result_images",
        sa.Column("result_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("png", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["result_id"], ["results.id"], name="fk_result_images_result_id_results", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("result_id", "kind", name="pk_result_images"),
    )


def downgrade() -> None:
    op.drop_table("result_images")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("image_kinds")
        batch.drop_column("details")
        batch.drop_column("task")
