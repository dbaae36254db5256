CREATE TABLE "sluice"."storage_reservations" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"owner_id" uuid NOT NULL,
	"bytes" bigint NOT NULL,
	"expires_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
ALTER TABLE "sluice"."tasks" ADD COLUMN "sql_state" text;--> statement-breakpoint
ALTER TABLE "sluice"."tasks" ADD COLUMN "cancel_reason" text;--> statement-breakpoint
CREATE INDEX "storage_reservations_owner" ON "sluice"."storage_reservations" USING btree ("owner_id","expires_at");--> statement-breakpoint
CREATE INDEX "tasks_active_owner" ON "sluice"."tasks" USING btree ("owner_id") WHERE "sluice"."tasks"."state" in ('queued', 'running');--> statement-breakpoint
CREATE INDEX "uploads_owner" ON "sluice"."uploads" USING btree ("owner_id");--> statement-breakpoint
-- Earlier versions stored a raw SQLSTATE as the error code: it moves to its own column.
UPDATE "sluice"."tasks" SET "sql_state" = "error_code", "error_code" = 'DATABASE_ERROR' WHERE "error_code" ~ '^[0-9A-Z]{5}$' AND "error_code" ~ '[0-9]';
