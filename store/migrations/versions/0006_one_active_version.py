"""one active adapter version, enforced by the database

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ONE_ACTIVE = "uq_adapterversion_one_active"


def upgrade() -> None:
    # A store written before this rule may hold two active rows: the most recently promoted one keeps serving.
    connection = op.get_bind()
    rows = connection.execute(
        sa.text(
            "SELECT id FROM adapterversion WHERE status = 'active' "
            "ORDER BY promoted_at IS NULL, promoted_at DESC, id DESC"
        )
    ).all()
    for (row_id,) in rows[1:]:
        connection.execute(sa.text("UPDATE adapterversion SET status = 'ready' WHERE id = :id"), {"id": row_id})
    # A partial unique index: at most one row whose status is 'active' (both SQLite and PostgreSQL have them).
    op.create_index(
        ONE_ACTIVE,
        "adapterversion",
        ["status"],
        unique=True,
        sqlite_where=sa.text("status = 'active'"),
        postgresql_where=sa.text("status = 'active'"),
    )


def downgrade() -> None:
    op.drop_index(ONE_ACTIVE, table_name="adapterversion")
