"""memory wordings: asked (a corrected question) or paraphrase (written by the base model for recall)

Revision ID: 0011
Revises: 0009
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("memorywording", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False, server_default="asked")
        )


def downgrade() -> None:
    with op.batch_alter_table("memorywording", schema=None) as batch_op:
        batch_op.drop_column("source")
