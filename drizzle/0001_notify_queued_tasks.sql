-- Wake idle dispatchers when a task becomes claimable, whoever inserted or requeued it.
-- The payload is the id only: listeners read the row themselves.
CREATE FUNCTION "sluice"."notify_task_queued"() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('sluice_tasks', NEW.id::text);
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER "tasks_notify_queued"
AFTER INSERT OR UPDATE OF "state" ON "sluice"."tasks"
FOR EACH ROW WHEN (NEW.state = 'queued')
EXECUTE FUNCTION "sluice"."notify_task_queued"();
